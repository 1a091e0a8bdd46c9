// b-common.js: what the pages of a business's public site (/b/{slug}/)
// share: the slug from the address, the API base, the business's name in
// the header.

export const slug = (/^\/b\/([a-z0-9-]{3,63})\//.exec(location.pathname)
                     || [])[1] || null;
export const base = slug ? `/api/b/${slug}` : null;

export function showBusiness(business) {
  const home = document.getElementById('home');
  if (home && business) {
    home.textContent = business.name;
    document.title = `${document.title} \u00b7 ${business.name}`;
  }
}
