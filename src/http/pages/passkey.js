// Gatehouse: "Sign in with a passkey" on the sign-in and second-factor
// pages. Progressive enhancement only: the button is rendered hidden and
// shown here when the browser has WebAuthn; without this script the pages
// work as before. It runs the JSON ceremony of issue 19
// (/api/v1/user/passkeys/login/start and /login/finish; the pending
// second-factor cookie goes along on its own), shows failures in the
// page's role="alert" region and, once signed in, goes to the checked
// return path of the page's own form (never to one read from the URL).
'use strict';

(function () {
  var section = document.getElementById('passkey');
  var button = document.getElementById('passkey-button');
  if (!section || !button || !window.PublicKeyCredential || !navigator.credentials) {
    return;
  }
  var START = '/api/v1/user/passkeys/login/start';
  var FINISH = '/api/v1/user/passkeys/login/finish';

  function fromBase64url(text) {
    var b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = '';
    for (var i = 0; i < bytes.length; i += 1) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // PublicKeyCredentialRequestOptionsJSON -> the browser's options.
  function requestOptions(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function') {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    var options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    if (Array.isArray(json.allowCredentials)) {
      options.allowCredentials = json.allowCredentials.map(function (c) {
        return Object.assign({}, c, { id: fromBase64url(c.id) });
      });
    }
    return options;
  }

  // The assertion as AuthenticationResponseJSON.
  function assertionJson(cred) {
    if (typeof cred.toJSON === 'function') return cred.toJSON();
    var r = cred.response;
    return {
      id: cred.id,
      rawId: toBase64url(cred.rawId),
      type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      response: {
        clientDataJSON: toBase64url(r.clientDataJSON),
        authenticatorData: toBase64url(r.authenticatorData),
        signature: toBase64url(r.signature),
        userHandle: r.userHandle ? toBase64url(r.userHandle) : null,
      },
      clientExtensionResults: cred.getClientExtensionResults(),
    };
  }

  // Where to go afterwards: the form's rd (already checked by Gatehouse),
  // checked once more to be a same-origin path.
  function returnPath() {
    var input = document.querySelector('form input[name="rd"]');
    var rd = input ? input.value : '';
    if (!rd || rd.charAt(0) !== '/' || rd.charAt(1) === '/' || rd.indexOf('\\') !== -1) {
      return '/';
    }
    return rd;
  }

  function showError(message) {
    var region = document.getElementById('form-error');
    if (!region) return;
    region.textContent = message;
    region.hidden = false;
  }

  async function postJson(path, body) {
    var resp = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    });
    var json = null;
    try {
      json = await resp.json();
    } catch (e) {
      json = null;
    }
    if (!resp.ok) {
      var err = new Error((json && (json.message || json.msg)) || button.dataset.error);
      err.fromServer = true;
      throw err;
    }
    return json;
  }

  async function signIn() {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      var start = await postJson(START, {});
      var cred = await navigator.credentials.get({ publicKey: requestOptions(start.publicKey) });
      if (!cred) throw new Error(button.dataset.error);
      await postJson(FINISH, { credential: assertionJson(cred) });
      window.location.assign(returnPath());
    } catch (e) {
      // The browser's own errors (cancelled, timed out, no passkey) are
      // not shown raw: one plain sentence instead.
      showError(e && e.fromServer ? e.message : button.dataset.error);
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  button.addEventListener('click', signIn);
  section.hidden = false;
})();
