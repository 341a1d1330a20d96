// A deliberately misbehaving OpenID Provider, for the token-level cases the
// certified provider (provider.mjs) cannot be made to produce: an ID token
// with the wrong nonce, expired, signed by another key, for another
// audience, from another issuer, unsigned; and a key rotation (a token
// signed with a key the cached key set does not have yet). It is a real
// HTTPS server speaking the protocol (discovery, JWKS, authorize, token with
// PKCE and client authentication checked); tokens are signed with `jose`.
//
// Usage: node fake-op.mjs CERT.pem KEY.pem
//   prints {"issuer": "https://127.0.0.1:PORT"}, serves until stdin closes.
// Control: GET /mode?m=NAME sets how the next ID tokens are made:
//   ok, wrong-nonce, expired, other-key, unknown-kid, wrong-aud, wrong-iss,
//   alg-none, rotate (sign with a new key that /jwks now also lists).
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT } from 'jose';

const [certFile, keyFile] = process.argv.slice(2);
const CLIENT_ID = 'gatehouse';
const CLIENT_SECRET = 'gatehouse-secret';

const good = await generateKeyPair('RS256');
const other = await generateKeyPair('RS256');
const rotated = await generateKeyPair('RS256');
const jwk = async (pair, kid) => ({ ...(await exportJWK(pair.publicKey)), kid, alg: 'RS256', use: 'sig' });
const keys = [await jwk(good, 'good')];

let mode = 'ok';
let issued = 0;
const codes = new Map();

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

async function idToken(issuer, grant) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    email: grant.email,
    email_verified: true,
    nonce: mode === 'wrong-nonce' ? 'not-the-nonce' : grant.nonce,
  };
  if (mode === 'alg-none') {
    return new UnsecuredJWT(claims)
      .setIssuer(issuer).setSubject(grant.sub).setAudience(CLIENT_ID)
      .setIssuedAt(now).setExpirationTime(now + 300).encode();
  }
  let key = good.privateKey;
  let kid = 'good';
  if (mode === 'other-key') key = other.privateKey;
  if (mode === 'unknown-kid') { key = other.privateKey; kid = 'never-published'; }
  if (mode === 'rotate') {
    key = rotated.privateKey; kid = 'rotated';
    if (!keys.some((k) => k.kid === 'rotated')) keys.push(await jwk(rotated, 'rotated'));
  }
  const exp = mode === 'expired' ? now - 3600 : now + 300;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'RS256', kid })
    .setIssuer(mode === 'wrong-iss' ? 'https://evil.example' : issuer)
    .setSubject(grant.sub)
    .setAudience(mode === 'wrong-aud' ? 'someone-else' : CLIENT_ID)
    .setIssuedAt(mode === 'expired' ? now - 7200 : now)
    .setExpirationTime(exp)
    .sign(key);
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; if (data.length > 65536) req.destroy(); });
    req.on('end', () => resolve(data));
  });
}

const server = https.createServer({
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
}, async (req, res) => {
  const issuer = `https://127.0.0.1:${server.address().port}`;
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname === '/.well-known/openid-configuration') {
      return send(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
        token_endpoint_auth_methods_supported: ['client_secret_basic'],
        code_challenge_methods_supported: ['S256'],
      });
    }
    if (url.pathname === '/jwks') return send(res, 200, { keys });
    if (url.pathname === '/mode') {
      mode = url.searchParams.get('m') || 'ok';
      return send(res, 200, { mode });
    }
    if (url.pathname === '/authorize') {
      const p = url.searchParams;
      if (p.get('client_id') !== CLIENT_ID || p.get('code_challenge_method') !== 'S256'
          || !p.get('code_challenge') || !p.get('nonce') || p.get('response_type') !== 'code') {
        return send(res, 400, { error: 'invalid_request' });
      }
      const code = crypto.randomBytes(16).toString('hex');
      issued += 1;
      const n = issued;
      codes.set(code, {
        nonce: p.get('nonce'),
        challenge: p.get('code_challenge'),
        redirect_uri: p.get('redirect_uri'),
        sub: `fake-sub-${n}`,
        email: `fake${n}@example.com`,
      });
      const back = new URL(p.get('redirect_uri'));
      back.searchParams.set('code', code);
      back.searchParams.set('state', p.get('state'));
      res.writeHead(302, { location: back.toString() });
      return res.end();
    }
    if (url.pathname === '/token' && req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      const auth = Buffer.from((req.headers.authorization || '').replace(/^Basic /, ''), 'base64').toString();
      const [id, secret] = auth.split(':').map(decodeURIComponent);
      if (id !== CLIENT_ID || secret !== CLIENT_SECRET) return send(res, 401, { error: 'invalid_client' });
      const grant = codes.get(form.get('code'));
      codes.delete(form.get('code'));
      const verifier = form.get('code_verifier') || '';
      const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
      if (!grant || grant.challenge !== challenge || grant.redirect_uri !== form.get('redirect_uri')) {
        return send(res, 400, { error: 'invalid_grant' });
      }
      return send(res, 200, {
        access_token: crypto.randomBytes(16).toString('hex'),
        token_type: 'Bearer',
        expires_in: 300,
        id_token: await idToken(issuer, grant),
      }, { 'cache-control': 'no-store' });
    }
    return send(res, 404, { error: 'not_found' });
  } catch (e) {
    return send(res, 500, { error: 'server_error', error_description: String(e) });
  }
});

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ issuer: `https://127.0.0.1:${server.address().port}` }));
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
});
