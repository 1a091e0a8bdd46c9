// events.mjs BASE FLOW...: the page flows of the event pages, in order, in
// one headless Chromium (flow.mjs); t/56-browser-events.t names the flows
// whose APIs the server has and judges the JSON line printed.
//
//   organiser   events-organiser.mjs   sign in, organisation, draft,
//                                      ticket types, publish
//   browse      events-browse.mjs      the list, filters, the event page
//   register    events-register.mjs    a free ticket: register, mail,
//                                      ticket, my events
//   teams       events-teams.mjs       teams, team page, submission,
//                                      cancelling the free ticket
//   paid        events-paid.mjs        a paid ticket through the
//                                      Stripe-format server

import { runFlows } from './flow.mjs';
import organiser from './events-organiser.mjs';
import browse from './events-browse.mjs';
import register from './events-register.mjs';
import teams from './events-teams.mjs';
import paid from './events-paid.mjs';

runFlows({ organiser, browse, register, teams, paid });
