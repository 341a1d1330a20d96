// Forges the requests a hostile page can send without a CORS preflight:
// "simple" cross-origin fetches with the user's cookies (mode no-cors, a
// text/plain body). The responses are opaque; what counts is what the
// server did, which the suite checks afterwards.
window.forge = async (target) => {
  const out = [];
  const attempts = [
    ['POST', '/api/v1/user/logout'],
    ['POST', '/api/v1/user/logout-all'],
    ['POST', '/api/v2/tasks?forged=1'],
    ['POST', '/api/v1/user/signin'],
  ];
  for (const [method, path] of attempts) {
    try {
      const r = await fetch(target + path, {
        method,
        mode: 'no-cors',
        credentials: 'include',
        headers: { 'Content-Type': 'text/plain' },
        body: '{"title":"forged","email":"attacker@example.com","password":"password1"}',
      });
      out.push({ path, type: r.type });
    } catch (e) {
      out.push({ path, error: String(e) });
    }
    const li = document.createElement('li');
    li.textContent = `${method} ${target}${path}`;
    document.getElementById('log').appendChild(li);
  }
  return out;
};
