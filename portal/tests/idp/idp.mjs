// A real OpenID Connect provider (the npm package oidc-provider) for the portal's single
// sign-on tests: authorization code flow with PKCE, RS256-signed ID tokens, discovery and JWKS,
// with its own login and consent forms (what a browser submits), on loopback only.
//
//   node idp.mjs <port>
//
// The issuer is http://127.0.0.1:<port>. One confidential client, a "native" application so
// that its loopback redirect URI may use any port (RFC 8252 §7.3): the portal under test
// listens on a port chosen at run time.
//
// Test accounts (password for all: TEST_PASSWORD): `alice` is in the groups `sso-agents` and
// `everyone`, `bob` in none. The subject (`sub`) differs from the username on purpose: the
// portal takes the username from a configurable claim.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

export const CLIENT_ID = 'callvault-portal';
export const CLIENT_SECRET = 'callvault-test-client-secret';
export const TEST_PASSWORD = 'idp test password';

const port = Number(process.argv[2] || process.env.CALLVAULT_IDP_PORT || 58090);
const issuer = `http://127.0.0.1:${port}`;

const ACCOUNTS = {
  'sub-0001': {
    username: 'alice', name: 'Alice Sso', email: 'alice@example.test', groups: ['sso-agents', 'everyone'],
  },
  'sub-0002': {
    username: 'bob', name: 'Bob Sso', email: 'bob@example.test', groups: [],
  },
};

function accountByUsername(username) {
  return Object.entries(ACCOUNTS).find(([, a]) => a.username === username)?.[0];
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    application_type: 'native',
    redirect_uris: ['http://127.0.0.1/api/v1/auth/oidc/callback'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['callvault test idp cookie key'] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const a = ACCOUNTS[sub];
    if (!a) return undefined;
    return {
      accountId: sub,
      async claims() {
        return {
          sub, preferred_username: a.username, name: a.name, email: a.email, groups: a.groups,
        };
      },
    };
  },
});

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, title, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'text/html; charset=utf-8');
  res.end(`<!doctype html><html><head><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`);
}

function loginForm(uid, error) {
  return `${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
<input name="login" autocomplete="username"><input name="password" type="password">
<button type="submit">Sign in</button></form>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return querystring.parse(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, step) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'Wrong interaction', '');
  const { prompt, params, session } = details;
  if (req.method === 'GET' && !step) {
    if (prompt.name === 'login') return page(res, 200, 'Sign in', loginForm(uid));
    return page(res, 200, 'Authorize', `<p>${esc(params.client_id)} asks for: ${esc(params.scope)}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Continue</button></form>`);
  }
  if (req.method === 'POST' && step === 'login') {
    const form = await readForm(req);
    const accountId = accountByUsername(form.login);
    if (!accountId || form.password !== TEST_PASSWORD) {
      return page(res, 200, 'Sign in', loginForm(uid, 'Wrong username or password'));
    }
    return provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && step === 'confirm') {
    await readForm(req);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    if (prompt.details.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    const result = details.grantId ? {} : { consent: { grantId } };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }
  return page(res, 405, 'Method not allowed', '');
}

const oidc = provider.callback();
createServer((req, res) => {
  const m = /^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/.exec(req.url.split('?')[0]);
  if (!m) return oidc(req, res);
  return interaction(req, res, m[1], m[2]).catch((e) => {
    page(res, 400, 'Interaction failed', `<p>${esc(e.message)}</p>`);
  });
}).listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
