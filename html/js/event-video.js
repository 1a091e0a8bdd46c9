// event-video.js: the live video section of event.html?id=N (player.js).
// Mounted once event.js knows who is signed in (document.platformMe, or
// the 'platform:me' event when that comes later): someone signed out is
// not sent to the stream endpoint (it would only say 401).

import { idParam } from '/js/api.js';
import { mountPlayer } from '/js/player.js';

const id = idParam('id');
const section = document.getElementById('video');

function start(me) {
  if (id && section && me) mountPlayer(section, id);
}

if ('platformMe' in document) {
  start(document.platformMe);
} else {
  document.addEventListener('platform:me', (e) => start(e.detail),
                            { once: true });
}
