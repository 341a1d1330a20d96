// A Flowtask-style client: the calls Flowtask's React app makes, with
// fetch and credentials, rendering what happened. The browser suite calls
// `window.flowtask.*` and reads the answers; the page shows them too.
(() => {
  const log = (text, ok) => {
    const li = document.createElement('li');
    li.textContent = text;
    li.className = ok ? 'ok' : 'fail';
    document.getElementById('log').appendChild(li);
  };

  async function call(method, path, body) {
    const init = { method, credentials: 'include', headers: {} };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    const text = await resp.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    log(`${method} ${path} -> ${resp.status}`, resp.ok);
    return { status: resp.status, body: json, text };
  }

  async function authCheck() {
    const r = await call('GET', '/api/v1/auth-check');
    document.getElementById('who').textContent =
      r.body && r.body.isAuthenticated ? `Signed in as ${r.body.email}` : 'Signed out';
    return r;
  }

  async function listTasks() {
    const r = await call('GET', '/api/v2/tasks');
    const ul = document.getElementById('tasks');
    ul.replaceChildren();
    if (Array.isArray(r.body)) {
      for (const t of r.body) {
        const li = document.createElement('li');
        li.textContent = `${t.done ? '[x]' : '[ ]'} ${t.title}`;
        ul.appendChild(li);
      }
    }
    return r;
  }

  /** The protocol every request to this origin went over, as the browser saw it. */
  function protocols() {
    const own = location.origin;
    return performance.getEntries()
      .filter((e) => (e.entryType === 'navigation' || e.entryType === 'resource') && e.name.startsWith(own))
      .map((e) => ({ name: e.name, protocol: e.nextHopProtocol }));
  }

  window.flowtask = {
    sendOtp: (email) => call('POST', '/api/v1/user/signup/send-otp', { email }),
    verify: (email, code, password) => call('POST', '/api/v1/user/signup/verify', { email, code, password }),
    signIn: (email, password) => call('POST', '/api/v1/user/signin', { email, password }),
    authCheck,
    listTasks,
    createTask: (title) => call('POST', '/api/v2/tasks', { title }),
    updateTask: (id, fields) => call('PUT', `/api/v2/tasks/${id}`, fields),
    deleteTask: (id) => call('DELETE', `/api/v2/tasks/${id}`),
    logout: () => call('POST', '/api/v1/user/logout'),
    logoutAll: () => call('POST', '/api/v1/user/logout-all'),
    protocols,
    log,
  };

  const nav = performance.getEntriesByType('navigation')[0];
  document.getElementById('protocol').textContent = nav ? nav.nextHopProtocol : 'unknown';
  authCheck();
})();
