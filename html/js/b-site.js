// b-site.js: /b/{slug}/ (b/index.html): the business's homes.

import { api, el, say } from '/js/api.js';
import { money } from '/js/format.js';
import { base, showBusiness } from '/js/b-common.js';

const list = document.getElementById('properties');
const message = document.getElementById('message');

async function load() {
  if (!base) {
    say(message, 'This address is not a site.', 'bad');
    return;
  }
  try {
    const site = await api(base);
    showBusiness(site.business);
    document.getElementById('name').textContent = site.business.name;
    list.replaceChildren(...site.properties.map((p) => el('li', { class: 'card' },
      p.images[0] ? el('img', { class: 'cover', src: p.images[0].thumbnails.w320,
                                alt: '', loading: 'lazy' }) : null,
      el('h3', {}, el('a', { href: `property.html?id=${p.id}`, text: p.name })),
      el('p', { text: `${money(p.price_minor, p.currency)} a night \u00b7 `
                      + `sleeps ${p.capacity}` }))));
    if (!site.properties.length) {
      list.append(el('li', { class: 'empty', text: 'No homes yet.' }));
    }
  } catch (err) {
    say(message, err.message, 'bad');
  }
}

load();
