// The API client: JSON over fetch, the session in an HttpOnly cookie, the CSRF token read from
// its (readable) cookie and sent on every unsafe request. Nothing is kept in local storage.

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (${status})`);
    this.status = status;
    this.code = body && body.code;
  }
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)cv_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

function send(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (UNSAFE.has(method)) headers['X-CSRF-Token'] = csrfToken();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** POSTs `body` and saves the answer as the file `name` (exports are made on request). */
export async function download(path, body, name) {
  const resp = await send('POST', path, body);
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, data);
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function api(method, path, body) {
  const resp = await send(method, path, body);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const get = (p) => api('GET', p);
export const post = (p, b) => api('POST', p, b ?? {});
export const put = (p, b) => api('PUT', p, b ?? {});
export const del = (p) => api('DELETE', p);
