// A certified OpenID Provider (npm `oidc-provider`, pinned in package.json)
// served over HTTPS on loopback, for Gatehouse's OIDC flow tests.
//
// Usage: node provider.mjs CERT.pem KEY.pem
//   1. listens on 127.0.0.1:0 and prints {"issuer": "https://127.0.0.1:PORT"}
//   2. reads one JSON line from stdin: {"redirect_uris": [...]} (Gatehouse's
//      callback URLs, known only once Gatehouse has its port)
//   3. prints {"ready": true} and serves until stdin closes.
//
// One confidential client: client_id "gatehouse", secret "gatehouse-secret".
// Accounts: the dev-interactions login form accepts any login; the login is
// the account's email, and its subject is the login. A login starting
// with "unverified+" has email_verified = false (the "unverified+" prefix is
// dropped from the email). Consent is given on the second form.
import fs from 'node:fs';
import https from 'node:https';
import readline from 'node:readline';
import Provider from 'oidc-provider';

const [certFile, keyFile] = process.argv.slice(2);
const server = https.createServer({
  cert: fs.readFileSync(certFile),
  key: fs.readFileSync(keyFile),
});

function account(id) {
  const unverified = id.startsWith('unverified+');
  const email = unverified ? id.slice('unverified+'.length) : id;
  return {
    accountId: id,
    async claims() {
      return { sub: id, email, email_verified: !unverified, name: email };
    },
  };
}

server.listen(0, '127.0.0.1', () => {
  const issuer = `https://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ issuer }));
  const lines = readline.createInterface({ input: process.stdin });
  let provider;
  lines.on('line', (line) => {
    if (provider) return;
    const { redirect_uris } = JSON.parse(line);
    provider = new Provider(issuer, {
      clients: [{
        client_id: 'gatehouse',
        client_secret: 'gatehouse-secret',
        redirect_uris,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      }],
      claims: {
        openid: ['sub'],
        email: ['email', 'email_verified'],
        profile: ['name'],
      },
      cookies: { keys: ['gatehouse-test-cookie-key'] },
      features: { devInteractions: { enabled: true } },
      findAccount: async (_ctx, id) => account(id),
      pkce: { required: () => true },
    });
    provider.proxy = false;
    server.on('request', provider.callback());
    console.log(JSON.stringify({ ready: true }));
  });
  lines.on('close', () => process.exit(0));
});
