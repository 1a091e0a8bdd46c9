// chromium.mjs: Debian's Chromium, headless, as every page test starts it.
//
// launch(userDataDir) gives a playwright-core persistent context (one
// person's browser with a profile on disk); launchBrowser() gives a
// browser whose contexts (browser.newContext(): one person each, cookies
// kept while it is open) are far cheaper to start than a Chromium each.
// The flags keep Chromium off the network it would otherwise call home to
// (closed here) and out of the sandbox it cannot use as root.
// PLATFORM_CHROMIUM overrides the binary.

import { chromium } from 'playwright-core';

export const executablePath = process.env.PLATFORM_CHROMIUM || '/usr/bin/chromium';

const options = {
  executablePath,
  headless: true,
  timeout: 30000,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
};

export function launch(userDataDir) {
  return chromium.launchPersistentContext(userDataDir, options);
}

export function launchBrowser() {
  return chromium.launch(options);
}
