// The CallVault web UI: a single page routed by the URL hash. Every screen reads and writes
// through the API (./api.js); what a user may do comes from /auth/me and each call's `allowed`.

import { api, get, post, put, del, download, ApiError } from './api.js';
import { el, clear } from './dom.js';
import { player, transcriptPane } from './player.js';

const main = document.getElementById('main');
let me = null;

const COLUMNS = {
  start_time: ['Start', (r) => when(r.start_time)],
  // Whole seconds, cut as the duration filter compares them (a 30.7 s call is "30 s" and "= 30").
  duration: ['Duration', (r) => `${Math.floor(r.duration_ms / 1000)} s`],
  direction: ['Direction', (r) => r.direction],
  calling: ['Calling', (r) => party(r.calling)],
  called: ['Called', (r) => party(r.called)],
  answering: ['Answering', (r) => party(r.answering)],
  call_type: ['Call type', (r) => r.call_type],
  release_cause: ['Release cause', (r) => r.release_cause || ''],
  status: ['Status', (r) => r.status],
  profile: ['Profile', (r) => r.profile],
  legal_hold: ['Legal hold', (r) => (r.legal_hold_effective ? 'yes' : '')],
};
const DEFAULT_COLUMNS = ['start_time', 'duration', 'direction', 'calling', 'called', 'status'];
// Column choice is a display preference, not a secret: kept in session storage for this tab.
let columns = JSON.parse(sessionStorage.getItem('cv.columns') || 'null') || DEFAULT_COLUMNS;

function when(us) { return us ? new Date(us / 1000).toLocaleString() : ''; }
function party(p) { return p && (p.number || p.name) ? `${p.number}${p.name ? ` (${p.name})` : ''}` : ''; }
function toMicros(v) { return v ? new Date(v).getTime() * 1000 : null; }

function showError(e) {
  const box = document.getElementById('error');
  if (!e) { box.hidden = true; return; }
  box.textContent = e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code})` : ''}` : String(e.message || e);
  box.hidden = false;
}

function field(label, input) { return el('label', {}, el('span', {}, label), input); }
function input(name, attrs = {}) { return el('input', { name, id: `f-${name}`, ...attrs }); }
function select(name, options, attrs = {}) {
  return el('select', { name, id: `f-${name}`, ...attrs },
    ...options.map(([v, t]) => el('option', { value: v }, t)));
}

// ---- sign-in -------------------------------------------------------------------------------

async function loginScreen() {
  document.getElementById('top').hidden = true;
  // Single sign-on shows only when the portal has a provider; local sign-in always stays.
  const providers = await get('/auth/providers').catch(() => ({ oidc: null }));
  const sso = providers.oidc
    ? el('div', { class: 'sso' },
      // A plain link: the provider's pages need a top-level navigation, not a fetch.
      el('a', { class: 'button', id: 'sso', href: providers.oidc.login_url }, `Sign in with ${providers.oidc.display_name}`),
      el('p', { class: 'muted or' }, 'or with a CallVault account'))
    : null;
  const form = el('form', { class: 'card login', id: 'login' },
    el('h2', {}, 'Sign in to CallVault'),
    sso,
    field('Username', input('username', { autocomplete: 'username', required: true })),
    field('Password', input('password', { type: 'password', autocomplete: 'current-password', required: true })),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Sign in')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await post('/auth/login', { username: form.username.value, password: form.password.value });
      showError(null);
      await start();
    } catch (err) { showError(err); }
  });
  clear(main).append(form);
}

function changePasswordScreen() {
  document.getElementById('top').hidden = true;
  const form = el('form', { class: 'card login', id: 'change-password' },
    el('h2', {}, 'Choose a new password'),
    el('p', { class: 'muted' }, 'Your password must be changed before you continue.'),
    field('Current password', input('current', { type: 'password', autocomplete: 'current-password', required: true })),
    field('New password', input('next', { type: 'password', autocomplete: 'new-password', required: true })),
    field('Repeat new password', input('repeat', { type: 'password', autocomplete: 'new-password', required: true })),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Change password')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (form.next.value !== form.repeat.value) { showError(new Error('the new passwords differ')); return; }
    try {
      await post('/auth/password', { current_password: form.current.value, new_password: form.next.value });
      showError(null);
      await start();
    } catch (err) { showError(err); }
  });
  clear(main).append(form);
}

// ---- interactions --------------------------------------------------------------------------

const DIRECTIONS = ['inbound', 'outbound', 'internal', 'conference'];
const CALL_TYPES = ['unknown', 'internal_p2p', 'external_p2p', 'pstn_p2p', 'internal_meeting', 'external_meeting',
  'internal_meeting_external_participants', 'queue'];
const CAUSES = ['normal', 'failure', 'missed', 'abandoned', 'transferred'];
const STATUSES = ['recording', 'pending', 'available', 'incomplete', 'deleted'];

function multi(name, values) {
  return select(name, values.map((v) => [v, v]), { multiple: true, size: Math.min(values.length, 4) });
}

/** The filter form ⇄ the API's SearchQuery. */
function readQuery(f) {
  const text = (n) => f[n].value.trim() || null;
  const sel = (n) => [...f[n].selectedOptions].map((o) => o.value);
  const q = {
    from: toMicros(f.from.value), to: toMicros(f.to.value),
    duration: f.dur_seconds.value !== '' ? { op: f.dur_op.value, seconds: Number(f.dur_seconds.value) } : null,
    directions: sel('directions'), calling: text('calling'), called: text('called'),
    calling_or_called: text('calling_or_called'), answering: text('answering'), participant: text('participant'),
    users: sel('users'), groups: [], unassigned: f.unassigned.checked, tags: sel('tags'), tag_match: f.tag_match.value,
    notes: text('notes'), call_types: sel('call_types'), release_causes: sel('release_causes'),
    statuses: sel('statuses'), text: text('text'), transcript: text('transcript'),
    sort: f.sort.value, direction: f.sort_dir.value,
  };
  return q;
}

function writeQuery(f, q) {
  const local = (us) => (us ? new Date(us / 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : '');
  f.from.value = local(q.from); f.to.value = local(q.to);
  f.dur_op.value = q.duration ? q.duration.op : '>'; f.dur_seconds.value = q.duration ? q.duration.seconds : '';
  for (const n of ['calling', 'called', 'calling_or_called', 'answering', 'participant', 'notes', 'text', 'transcript']) f[n].value = q[n] || '';
  for (const n of ['directions', 'users', 'tags', 'call_types', 'release_causes', 'statuses']) {
    for (const o of f[n].options) o.selected = (q[n] || []).includes(o.value);
  }
  f.unassigned.checked = !!q.unassigned; f.tag_match.value = q.tag_match || 'any';
  f.sort.value = q.sort || 'start_time'; f.sort_dir.value = q.direction || 'desc';
}

async function callsScreen() {
  const [tags, saved, users] = await Promise.all([
    get('/tags').catch(() => []), get('/saved-queries').catch(() => []), get('/users').catch(() => []),
  ]);
  const f = el('form', { class: 'card', id: 'filters' },
    el('div', { class: 'filters' },
      field('From', input('from', { type: 'datetime-local' })), field('To', input('to', { type: 'datetime-local' })),
      field('Duration (s)', el('span', {}, select('dur_op', [['>', '>'], ['<', '<'], ['=', '='], ['>=', '≥'], ['<=', '≤']]), input('dur_seconds', { type: 'number', min: 0 }))),
      field('Calling party', input('calling')), field('Called party', input('called')),
      field('Called or calling party', input('calling_or_called')), field('Answering party', input('answering')),
      field('Participant', input('participant')), field('Free text', input('text', { placeholder: 'values, comma-separated' })),
      field('Notes contain', input('notes')), field('Transcript contains', input('transcript')),
      field('Direction', multi('directions', DIRECTIONS)), field('Call type', multi('call_types', CALL_TYPES)),
      field('Release cause', multi('release_causes', CAUSES)), field('Status', multi('statuses', STATUSES)),
      field('Users', select('users', users.map((u) => [u.id, u.display_name || u.username]), { multiple: true, size: 4 })),
      field('Tags', select('tags', tags.map((t) => [t.id, t.name]), { multiple: true, size: 4 })),
      field('Tags match', select('tag_match', [['any', 'any'], ['all', 'all']])),
      field('Unassigned only', input('unassigned', { type: 'checkbox' })),
      field('Sort by', select('sort', [['start_time', 'Start'], ['duration', 'Duration'], ['calling_party', 'Calling'], ['called_party', 'Called'], ['answering_party', 'Answering']])),
      field('Order', select('sort_dir', [['desc', 'Newest/largest first'], ['asc', 'Oldest/smallest first']]))),
    el('div', { class: 'actions' },
      el('button', { type: 'submit', id: 'search' }, 'Search'),
      el('button', { type: 'button', class: 'secondary', id: 'reset' }, 'Clear'),
      select('saved', [['', 'Saved queries…'], ...saved.map((s) => [s.id, s.name])]),
      el('button', { type: 'button', class: 'secondary', id: 'save-query' }, 'Save query…'),
      el('button', { type: 'button', class: 'secondary', id: 'delete-query' }, 'Delete saved')));
  const cols = el('details', { class: 'card columns' }, el('summary', {}, 'Columns'),
    ...Object.entries(COLUMNS).map(([k, [label]]) => {
      const box = el('input', { type: 'checkbox', value: k, checked: columns.includes(k) || null });
      box.addEventListener('change', () => {
        columns = Object.keys(COLUMNS).filter((c) => cols.querySelector(`input[value="${c}"]`).checked);
        sessionStorage.setItem('cv.columns', JSON.stringify(columns));
        render();
      });
      return el('label', {}, box, ` ${label}`);
    }));
  const table = el('table', { id: 'calls' });
  const summary = el('p', { id: 'summary', class: 'muted' });
  const more = el('button', { type: 'button', class: 'secondary', id: 'more', hidden: true }, 'More');
  let items = []; let cursor = null; let query = {};

  function render() {
    clear(table).append(
      el('thead', {}, el('tr', {}, ...columns.map((c) => el('th', {}, COLUMNS[c][0])))),
      el('tbody', {}, ...items.map((r) => {
        const tr = el('tr', { class: 'row', 'data-id': r.id }, ...columns.map((c) => el('td', {}, COLUMNS[c][1](r))));
        tr.addEventListener('click', () => { location.hash = `#/calls/${r.id}`; });
        return tr;
      })));
  }
  async function search(append) {
    try {
      const page = await post('/recordings/search', { query, limit: 50, cursor: append ? cursor : null });
      items = append ? items.concat(page.items) : page.items;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = `${page.total} call${page.total === 1 ? '' : 's'}`;
      render(); showError(null);
    } catch (e) { showError(e); }
  }
  f.addEventListener('submit', (e) => { e.preventDefault(); query = readQuery(f); search(false); });
  f.querySelector('#reset').addEventListener('click', () => { writeQuery(f, {}); query = {}; search(false); });
  f.saved.addEventListener('change', () => {
    const s = saved.find((x) => x.id === f.saved.value);
    if (s) { writeQuery(f, s.query); query = readQuery(f); search(false); }
  });
  f.querySelector('#save-query').addEventListener('click', async () => {
    const name = prompt('Name of the saved query');
    if (!name) return;
    try { await post('/saved-queries', { name, query: readQuery(f) }); route(); } catch (e) { showError(e); }
  });
  f.querySelector('#delete-query').addEventListener('click', async () => {
    if (!f.saved.value) return;
    try { await del(`/saved-queries/${f.saved.value}`); route(); } catch (e) { showError(e); }
  });
  more.addEventListener('click', () => search(true));
  writeQuery(f, {});
  clear(main).append(f, cols, summary, table, more);
  await search(false);
}

// ---- call details --------------------------------------------------------------------------

async function callScreen(id) {
  const d = await get(`/recordings/${id}`);
  const r = d.recording;
  const allowed = new Set(d.allowed);
  const lanes = Array.from({ length: Math.max(1, r.channels) }, (_, i) =>
    (i === 0 ? `Channel 1 — ${party(r.calling)}` : i === 1 ? `Channel 2 — ${party(r.called)}` : `Channel ${i + 1}`));
  const parts = [el('p', {}, el('a', { href: '#/calls' }, '← Interactions'))];

  const info = el('div', { class: 'card', id: 'details' }, el('h2', {}, `${party(r.calling)} → ${party(r.called)}`),
    el('dl', {},
      ...[['Start', when(r.start_time)], ['End', when(r.end_time)], ['Duration', `${Math.floor(r.duration_ms / 1000)} s`],
        ['Direction', r.direction], ['Call type', r.call_type], ['Release cause', r.release_cause || ''],
        ['Answering', party(r.answering)], ['Queue', r.queue_name], ['Agents', (r.agents || []).join(', ')],
        ['Call id', r.call_id], ['Profile', r.profile], ['Status', r.status], ['Legal hold', r.legal_hold_effective ? 'yes' : 'no'],
        ['Expires', when(r.expires_at)]].flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v || '—')])),
    el('h3', {}, 'Participants'),
    el('ul', { id: 'participants' }, ...callParties(r).map((p) => el('li', {}, party(p) + attendance(p)))));
  parts.push(info);

  if (r.status === 'recording') {
    parts.push(el('p', { class: 'card live', id: 'live' }, 'This call is being recorded now; it can be played once it ends.'));
  } else if (allowed.has('play')) {
    // A meeting the user attended part of plays that part only (the portal serves it cut).
    const heard = d.part ? ((d.part.leftMs ?? r.duration_ms) - d.part.joinedMs) : r.duration_ms;
    const p = player(r.id, lanes, heard / 1000);
    const card = el('div', { class: 'card' }, el('h3', {}, 'Playback'), p.node);
    if (d.part) {
      card.append(el('p', { id: 'part', class: 'muted' }, 'You attended part of this meeting: you hear ' +
        `${clock(d.part.joinedMs)} to ${d.part.leftMs == null ? 'the end' : clock(d.part.leftMs)}.`));
    }
    if (allowed.has('download')) card.append(el('p', {}, el('a', { href: `/api/v1/recordings/${r.id}/download`, id: 'download' }, 'Download')));
    if (d.transcripts.length) card.append(el('h3', {}, 'Transcript'), transcriptPane(d.transcripts, p.audio, lanes));
    parts.push(card);
  } else {
    parts.push(el('p', { class: 'card muted', id: 'no-play' }, 'You may see this call but not play it.'));
  }

  // Tags.
  const tagList = el('div', { id: 'tags' }, ...d.tags.map((t) => el('span', { class: 'tag' }, t.name)));
  const tagCard = el('div', { class: 'card' }, el('h3', {}, 'Tags'), tagList);
  if (allowed.has('tag')) {
    const all = await get('/tags').catch(() => []);
    const chooser = el('select', { id: 'tag-choice', multiple: true, size: Math.min(Math.max(all.length, 2), 6) },
      ...all.map((t) => el('option', { value: t.id, selected: d.tags.some((x) => x.id === t.id) || null }, t.name)));
    const save = el('button', { type: 'button', id: 'save-tags' }, 'Save tags');
    save.addEventListener('click', async () => {
      try {
        await put('/recordings/tags', { recordings: [r.id], tags: [...chooser.selectedOptions].map((o) => o.value) });
        route();
      } catch (e) { showError(e); }
    });
    tagCard.append(el('div', { class: 'actions' }, chooser, save));
  }
  parts.push(tagCard);

  // Notes.
  const notes = el('div', { id: 'notes' }, ...d.notes.map((n) => {
    const row = el('div', { class: 'note' }, el('div', {}, n.body), el('small', { class: 'muted' }, `${n.author_name}, ${when(n.created_at)} `));
    const mine = n.author_user_id === me.user.id;
    if (mine || allowed.has('deleteOthersNotes')) {
      const x = el('button', { type: 'button', class: 'secondary' }, 'Delete');
      x.addEventListener('click', async () => { try { await del(`/notes/${n.id}`); route(); } catch (e) { showError(e); } });
      row.append(x);
    }
    return row;
  }));
  const noteCard = el('div', { class: 'card' }, el('h3', {}, 'Notes'), notes);
  if (allowed.has('addNotes')) {
    const text = el('textarea', { id: 'note-text', rows: 3, 'aria-label': 'New note' });
    const add = el('button', { type: 'button', id: 'add-note' }, 'Add note');
    add.addEventListener('click', async () => {
      if (!text.value.trim()) return;
      try { await post(`/recordings/${r.id}/notes`, { body: text.value }); route(); } catch (e) { showError(e); }
    });
    noteCard.append(text, el('div', { class: 'actions' }, add));
  }
  parts.push(noteCard);

  // Integrity.
  const result = el('span', { id: 'integrity-result' });
  const check = el('button', { type: 'button', class: 'secondary', id: 'check-integrity' }, 'Verify integrity');
  check.addEventListener('click', async () => {
    try {
      const v = await get(`/recordings/${r.id}/integrity`);
      result.textContent = ` ${v.result}${v.detail ? `: ${v.detail}` : ''}`;
      result.className = v.result === 'authenticated' ? 'ok' : 'bad';
    } catch (e) { showError(e); }
  });
  parts.push(el('div', { class: 'card' }, el('h3', {}, 'Integrity'),
    el('p', { class: 'muted' }, `SHA-256 ${r.sha256 || '—'}, key ${r.key_id || '—'}`), check, result));
  clear(main).append(...parts);
}

// ---- administration ------------------------------------------------------------------------

function table(headers, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows.map((cells) => el('tr', {}, ...cells.map((c) => el('td', {}, c))))));
}

function button(label, fn, cls = 'secondary') {
  const b = el('button', { type: 'button', class: cls }, label);
  b.addEventListener('click', async () => { try { await fn(); showError(null); route(); } catch (e) { showError(e); } });
  return b;
}

async function usersScreen() {
  const users = await get('/users');
  const f = el('form', { class: 'card', id: 'new-user' }, el('h3', {}, 'New local user'),
    el('div', { class: 'filters' }, field('Username', input('username', { required: true })),
      field('Display name', input('display_name')), field('Email', input('email', { type: 'email' })),
      field('Initial password', input('password', { type: 'password', required: true }))),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create (must change password)')));
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await post('/users', { username: f.username.value, display_name: f.display_name.value, email: f.email.value, password: f.password.value });
      showError(null); route();
    } catch (err) { showError(err); }
  });
  clear(main).append(f, table(['User', 'Name', 'Source', 'State', 'Legal hold', ''], users.map((u) => [
    u.username, u.display_name, u.source, u.disabled ? 'disabled' : u.locked_until ? 'locked' : 'active',
    u.legal_hold ? 'on hold' : '',
    el('span', { class: 'actions' },
      button(u.legal_hold ? 'Lift hold' : 'Place hold', () => put(`/users/${u.id}/legal-hold`, { hold: !u.legal_hold })),
      button('Reset password', async () => {
        const pw = prompt(`New temporary password for ${u.username}`);
        if (pw) await post(`/users/${u.id}/password-reset`, { password: pw });
      }),
      u.id === me.actor.id ? null : button('Impersonate', async () => { await post(`/users/${u.id}/impersonate`); await start(); })),
  ])));
}

async function tagsScreen() {
  const tags = await get('/tags');
  const f = el('form', { class: 'card', id: 'new-tag' }, el('h3', {}, 'New tag'),
    el('div', { class: 'filters' }, field('Name', input('name', { required: true })), field('Colour', input('color', { type: 'color', value: '#dce6f2' }))),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Create tag')));
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await post('/tags', { name: f.name.value, color: f.color.value }); showError(null); route(); } catch (err) { showError(err); }
  });
  clear(main).append(f, table(['Tag', ''], tags.map((t) => [el('span', { class: 'tag' }, t.name), button('Delete', () => del(`/tags/${t.id}`))])));
}

async function sessionsScreen() {
  const mine = await get('/sessions');
  const all = me.admin.includes('configureSystem') ? await get('/admin/sessions').catch(() => null) : null;
  const rows = (list) => list.map((s) => [s.user_id, when(s.created_at), when(s.last_seen_at), s.ip, s.user_agent,
    button('End', () => del(`/sessions/${s.id_hash || s.id}`))]);
  clear(main).append(el('h3', {}, 'My sessions'), table(['User', 'Started', 'Last seen', 'Address', 'Browser', ''], rows(mine)));
  if (all) main.append(el('h3', {}, 'All active sessions'), table(['User', 'Started', 'Last seen', 'Address', 'Browser', ''], rows(all)));
}

async function auditScreen() {
  const f = el('form', { class: 'card', id: 'audit-filters' },
    el('div', { class: 'filters' }, field('From', input('from', { type: 'datetime-local' })), field('To', input('to', { type: 'datetime-local' })),
      field('Actor', input('actor')), field('Action', input('action')), field('Item type', input('item_type')), field('Item id', input('item_id'))),
    el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Filter'),
      el('a', { id: 'audit-csv', href: '/api/v1/audit/export.csv' }, 'Export CSV'),
      el('button', { type: 'button', class: 'secondary', id: 'audit-verify' }, 'Verify chain'), el('span', { id: 'verify-result' })));
  const out = el('div', { id: 'audit' });
  const params = () => {
    const p = new URLSearchParams();
    for (const n of ['actor', 'action', 'item_type', 'item_id']) if (f[n].value.trim()) p.set(n, f[n].value.trim());
    for (const n of ['from', 'to']) if (f[n].value) p.set(n, String(toMicros(f[n].value)));
    return p;
  };
  async function load() {
    try {
      const p = params();
      f.querySelector('#audit-csv').href = `/api/v1/audit/export.csv?${p}`;
      p.set('limit', '500');
      const list = await get(`/audit?${p}`);
      clear(out).append(table(['#', 'Time', 'Actor', 'Action', 'Item', 'Details'], list.map((a) => [
        String(a.seq), when(a.time), a.impersonator ? `${a.impersonator} as ${a.actor}` : a.actor, a.action,
        `${a.item_type} ${a.item_id}`, a.details])));
      showError(null);
    } catch (e) { showError(e); }
  }
  f.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  f.querySelector('#audit-verify').addEventListener('click', async () => {
    try {
      const v = await get('/audit/verify');
      f.querySelector('#verify-result').textContent = JSON.stringify(v);
    } catch (e) { showError(e); }
  });
  clear(main).append(f, out);
  await load();
}

// ---- active calls --------------------------------------------------------------------------

// A screen's refresh timers; stopped whenever another screen is shown.
let timers = [];
function every(ms, fn) { timers.push(setInterval(fn, ms)); }
function stopTimers() { for (const t of timers) clearInterval(t); timers = []; }

/** Live duration of a call that started at `us` (µs), as h:mm:ss. */
function since(us) {
  const s = Math.max(0, Math.floor((Date.now() - us / 1000) / 1000));
  const pad = (n) => String(n).padStart(2, '0');
  return `${Math.floor(s / 3600)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
}
function liveDuration(r) { return el('span', { class: 'duration', 'data-start': r.start_time }, since(r.start_time)); }
function tickDurations() {
  for (const d of main.querySelectorAll('.duration[data-start]')) d.textContent = since(Number(d.dataset.start));
}
// Everyone on the call, each once: the metadata's participants repeat the calling and called
// party, and a party the source did not name is left out.
function callParties(r) {
  // Each party once, in order; a meeting participant's join and leave come from the list.
  const byKey = new Map();
  for (const p of [r.calling, r.called, ...(r.participants || [])]) {
    if (!p || !(p.number || p.name) || p.number === 'unknown') continue;
    const key = `${p.number}\u0000${p.name}`;
    const first = byKey.get(key);
    byKey.set(key, first ? { ...first, joinedMs: first.joinedMs ?? p.joinedMs, leftMs: first.leftMs ?? p.leftMs } : p);
  }
  return [...byKey.values()];
}
// m:ss from the recording's start.
function clock(ms) { const s = Math.floor(ms / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`; }
function attendance(p) {
  return (p.joinedMs == null ? '' : ` — joined at ${clock(p.joinedMs)}`) + (p.leftMs == null ? '' : ` — left at ${clock(p.leftMs)}`);
}
function participants(r) { return String(callParties(r).length); }
function userName(r) { return r.user_display_name || r.user_name || 'not assigned'; }

// Tags and notes on live calls, set where the calls are listed: an editor card above the
// list (which the list's refresh leaves alone), the buttons each call's `allowed` actions
// give, and the tags and notes as shown.
async function liveAnnotations(reload) {
  const catalogue = await get('/tags').catch(() => []);
  const editor = el('div', { class: 'card', id: 'live-editor', hidden: true });
  function closeEditor() { editor.hidden = true; clear(editor); }
  function openEditor(r, title, body, save) {
    const ok = el('button', { type: 'button', id: 'live-save' }, 'Save');
    const cancel = el('button', { type: 'button', class: 'secondary', id: 'live-cancel' }, 'Cancel');
    ok.addEventListener('click', async () => {
      try { await save(); closeEditor(); await reload(); showError(null); } catch (e) { showError(e); }
    });
    cancel.addEventListener('click', closeEditor);
    clear(editor).append(el('h3', {}, `${title} — ${party(r.calling)} → ${party(r.called)}`), ...body,
      el('div', { class: 'actions' }, ok, cancel));
    editor.dataset.id = r.id;
    editor.hidden = false;
  }
  function editTags(r) {
    const chooser = el('select', { id: 'live-tags', multiple: true, size: Math.min(Math.max(catalogue.length, 2), 6) },
      ...catalogue.map((t) => el('option', { value: t.id, selected: r.tags.some((x) => x.id === t.id) || null }, t.name)));
    openEditor(r, 'Set tags', [el('p', { class: 'muted' }, 'The tags chosen replace the call\'s tags.'), chooser],
      () => put('/recordings/tags', { recordings: [r.id], tags: [...chooser.selectedOptions].map((o) => o.value) }));
  }
  function addNote(r) {
    const text = el('textarea', { id: 'live-note', rows: 3, 'aria-label': 'New note', placeholder: 'Insert a new note' });
    openEditor(r, 'Add note', [text], async () => {
      if (!text.value.trim()) throw new Error('the note is empty');
      await post(`/recordings/${r.id}/notes`, { body: text.value });
    });
  }
  return {
    editor,
    actions(r) {
      const allowed = new Set(r.allowed || []);
      const btn = (cls, label, fn) => {
        const b = el('button', { type: 'button', class: `secondary ${cls}` }, label);
        b.addEventListener('click', (e) => { e.stopPropagation(); fn(r); });
        return b;
      };
      return el('span', { class: 'actions' }, allowed.has('tag') ? btn('live-tag', 'Tags…', editTags) : null,
        allowed.has('addNotes') ? btn('live-note', 'Note…', addNote) : null);
    },
    tags: (r) => el('span', { class: 'live-tags' }, ...r.tags.map((x) => el('span', { class: 'tag' }, x.name))),
    notes: (r) => el('div', { class: 'live-notes' }, ...r.notes.map((n) => el('div', { class: 'note' }, n.body,
      el('small', { class: 'muted' }, ` ${n.author_name}, ${when(n.created_at)}`)))),
  };
}

async function activeCallsScreen() {
  const summary = el('p', { id: 'active-summary' });
  const out = el('div', { id: 'active-calls' });
  const live = await liveAnnotations(load);
  async function load() {
    const list = await get('/active-calls');
    summary.textContent = `Total calls: ${list.length}`;
    const t = table(['Status', 'User name', 'Start time', 'Duration', 'Direction', 'Participants', 'Called party', 'Calling party',
      'Tags', 'Notes', ''],
    list.map((r) => [el('span', { class: 'live' }, 'Recording'), userName(r), when(r.start_time), liveDuration(r), r.direction,
      participants(r), party(r.called), party(r.calling), live.tags(r), live.notes(r), live.actions(r)]));
    t.querySelectorAll('tbody tr').forEach((tr, i) => {
      tr.classList.add('row');
      tr.dataset.id = list[i].id;
      tr.addEventListener('click', () => { location.hash = `#/calls/${list[i].id}`; });
    });
    clear(out).append(list.length ? t : el('p', { class: 'muted' }, 'No call is being recorded now.'));
  }
  // Export: a separate entry for each call being recorded now, as the export action allows.
  const exportButton = el('button', { type: 'button', class: 'secondary', id: 'export-active', hidden: !me.actions.includes('export') }, 'Export');
  exportButton.addEventListener('click', async () => {
    try {
      await download('/recordings/export', { format: 'csv', query: { statuses: ['recording'] } }, 'active-calls.csv');
      showError(null);
    } catch (e) { showError(e); }
  });
  clear(main).append(el('div', { class: 'actions' }, el('h2', {}, 'Active calls'), exportButton), summary, live.editor, out);
  await load();
  every(1000, tickDurations);
  every(5000, () => load().then(() => showError(null), showError));
}

async function myActiveCallScreen() {
  const out = el('div', { id: 'my-active' });
  const live = await liveAnnotations(load);
  async function load() {
    const list = await get('/active-calls/mine');
    clear(out).append(...(list.length ? list.map((r) => el('div', { class: 'card my-call', 'data-id': r.id },
      el('h3', {}, 'User details'),
      el('dl', {}, ...[['Full name', userName(r)], ['Start time', when(r.start_time)], ['Duration', liveDuration(r)],
        ['Direction', r.direction], ['Called party', party(r.called)], ['Participants', participants(r)],
        ['Calling party', party(r.calling)], ['Tags', live.tags(r)], ['Notes', live.notes(r)]]
        .flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
      live.actions(r)))
      : [el('p', { class: 'card muted' }, 'You have no active call.')]));
  }
  clear(main).append(el('h2', {}, 'My active call'), live.editor, out);
  await load();
  every(1000, tickDurations);
  every(5000, () => load().then(() => showError(null), showError));
}

// ---- system: groups, declared resources, alarms --------------------------------------------

async function groupsScreen() {
  const groups = await get('/groups');
  clear(main).append(el('h2', {}, 'Groups'), el('div', { id: 'groups' }, table(['Group', 'Description', 'Members', 'Source'],
    groups.map((g) => [g.name, g.description, g.members.join(', ') || '—', g.external_id ? 'identity provider' : 'local']))));
}

function conditions(status) {
  const list = (status && status.conditions) || [];
  if (!list.length) return el('span', { class: 'muted' }, 'no status reported');
  return el('span', {}, ...list.map((c) => el('span', {
    class: `cond ${String(c.status).toLowerCase()}`,
    title: `${c.reason}${c.message ? `: ${c.message}` : ''}`,
  }, `${c.type}: ${c.status}`)));
}

function bytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const on = (o) => Object.entries(o || {}).filter(([, v]) => v === true).map(([k]) => k).join(', ');

// Per kind: the screen's title, the API path and the columns beside name and conditions.
const RESOURCES = {
  'recording-profiles': ['Recording profiles', [
    ['Description', (s) => s.description || ''],
    ['Storage target', (s) => s.storageTargetRef && s.storageTargetRef.name],
    ['Retention', (s) => (s.retention && s.retention.days ? `${s.retention.days} days` : '')],
    ['Recorders ready', (s, st) => (st ? `${st.readyReplicas || 0} of ${st.replicas || 0}` : '')],
    ['Active sessions', (s, st) => (st ? String(st.activeSessions || 0) : '')],
    ['Users kept by an older profile', (s, st) => ((st && st.conflicts) || []).map((c) => `${c.user} (${c.profile})`).join(', ')],
  ]],
  'access-profiles': ['Access profiles', [
    ['Subjects', (s) => [...((s.subjects && s.subjects.groups) || []).map((g) => `group ${g}`), ...((s.subjects && s.subjects.users) || [])].join(', ')],
    ['Call scope', (s) => (s.calls ? s.calls.scope + (s.calls.groups && s.calls.groups.length ? ` (${s.calls.groups.join(', ')})` : '') : '')],
    ['Actions', (s) => on(s.calls && s.calls.actions)],
    ['Admin', (s) => on(s.admin)],
    ['Keys', (s) => String((s.keys || []).length)],
  ]],
  'storage-targets': ['Storage targets', [
    ['Type', (s) => s.type],
    ['Location', (s) => [s.bucket || s.container || s.path, s.prefix].filter(Boolean).join('/')],
    ['Used', (s, st) => (st ? bytes(st.usedBytes) : '')],
    ['Objects', (s, st) => (st ? String(st.objects || 0) : '')],
  ]],
  connectors: ['Connectors', [
    ['Destination', (s) => s.storageTargetRef && s.storageTargetRef.name],
    ['Schedule', (s) => s.schedule || ''],
    ['Active', (s) => (s.active ? 'yes' : 'no')],
    ['Archived', (s, st) => (st ? String(st.archivedFiles || 0) : '')],
    ['Pending', (s, st) => (st ? String(st.pendingFiles || 0) : '')],
  ]],
  'speech-jobs': ['Speech jobs', [
    ['Engine', (s) => s.engine && [s.engine.type, s.engine.model].filter(Boolean).join(' ')],
    ['Language', (s) => s.language || ''],
    ['Mode', (s) => s.mode || ''],
    ['Processed', (s, st) => (st ? String(st.processed || 0) : '')],
    ['Failed', (s, st) => (st ? String(st.failed || 0) : '')],
  ]],
};

async function resourcesScreen(kind) {
  const [title, cols] = RESOURCES[kind];
  const list = await get(`/resources/${kind}`);
  const t = table(['Name', 'Conditions', ...cols.map(([h]) => h), ''], list.map((r) => {
    const more = el('details', {}, el('summary', {}, 'Spec and status'),
      el('pre', { class: 'spec' }, JSON.stringify({ spec: r.spec, status: r.status }, null, 2)));
    return [r.name, conditions(r.status), ...cols.map(([, f]) => f(r.spec || {}, r.status) || ''), more];
  }));
  t.id = 'resources';
  t.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.name = list[i].name; });
  clear(main).append(el('h2', {}, title),
    el('p', { class: 'muted' }, 'Declared as resources (kubectl or the resource files); shown here as the system reports them.'),
    list.length ? t : el('p', { class: 'muted', id: 'resources' }, 'None declared.'));
}

async function alarmsScreen() {
  const history = el('input', { type: 'checkbox', id: 'alarm-history' });
  const alarms = el('div', { id: 'alarms' });
  const activity = el('div', { id: 'activity' });
  const older = el('button', { type: 'button', class: 'secondary', id: 'activity-older', hidden: true }, 'Older');
  let entries = [];
  async function loadAlarms() {
    const list = await get(`/alarms${history.checked ? '?history=true' : ''}`);
    clear(alarms).append(list.length
      ? table(['Severity', 'Alarm', 'Source', 'Message', 'Raised', 'Cleared'], list.map((a) => [
        el('span', { class: `sev ${a.severity}` }, a.severity), a.alarm_type, a.source, a.message, when(a.raised_at),
        a.cleared_at ? when(a.cleared_at) : el('span', { class: 'bad' }, 'active')]))
      : el('p', { class: 'muted' }, history.checked ? 'No alarm was ever raised.' : 'No active alarm.'));
  }
  async function loadActivity(append) {
    const before = append && entries.length ? `&before=${entries[entries.length - 1].id}` : '';
    const page = await get(`/activity?limit=100${before}`);
    entries = append ? entries.concat(page) : page;
    older.hidden = page.length < 100;
    clear(activity).append(table(['Time', 'Kind', 'Message'], entries.map((e) => [when(e.time), e.kind, e.message])));
  }
  history.addEventListener('change', () => loadAlarms().catch(showError));
  older.addEventListener('click', () => loadActivity(true).catch(showError));
  clear(main).append(el('h2', {}, 'Alarms'), el('label', {}, history, ' Show cleared alarms (history)'), alarms,
    el('h2', {}, 'Activity log'), activity, older);
  await Promise.all([loadAlarms(), loadActivity(false)]);
}

// ---- shell ---------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || '#/calls';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', hash.startsWith(a.getAttribute('href')));
  stopTimers();
  try {
    const m = hash.match(/^#\/calls\/([0-9a-f-]{36})$/);
    const kind = hash.match(/^#\/admin\/([a-z-]+)$/);
    if (m) await callScreen(m[1]);
    else if (hash === '#/active') await activeCallsScreen();
    else if (hash === '#/my-active') await myActiveCallScreen();
    else if (kind && RESOURCES[kind[1]]) await resourcesScreen(kind[1]);
    else if (hash === '#/admin/groups') await groupsScreen();
    else if (hash === '#/admin/alarms') await alarmsScreen();
    else if (hash === '#/admin/users') await usersScreen();
    else if (hash === '#/admin/tags') await tagsScreen();
    else if (hash === '#/admin/sessions') await sessionsScreen();
    else if (hash === '#/admin/audit') await auditScreen();
    else await callsScreen();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === 'password_change_required')) { await start(); return; }
    showError(e);
  }
}

async function start() {
  stopTimers();
  try {
    me = await get('/auth/me');
  } catch (e) {
    me = null;
    await loginScreen();
    return;
  }
  if (me.must_change_password) { changePasswordScreen(); return; }
  document.getElementById('top').hidden = false;
  document.getElementById('who').textContent = me.actor.display_name || me.actor.username;
  // An admin link shows with any one of the permissions it lists; Active calls with a call scope.
  for (const a of document.querySelectorAll('#nav a[data-admin]')) a.hidden = !a.dataset.admin.split(' ').some((p) => me.admin.includes(p));
  for (const a of document.querySelectorAll('#nav a[data-scope]')) a.hidden = me.scope === 'None';
  const banner = document.getElementById('banner');
  banner.hidden = !me.impersonating;
  document.getElementById('banner-text').textContent = me.impersonating
    ? `You are viewing CallVault as ${me.user.display_name || me.user.username} (read-only).` : '';
  await route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await post('/auth/logout'); } catch { /* signed out either way */ }
  // Signed out before the URL changes, and without a hashchange event: a screen rendered by
  // that event would race the sign-in form and replace it.
  me = null;
  history.replaceState(null, '', '#/calls');
  await start();
});
document.getElementById('stop-impersonation').addEventListener('click', async () => {
  try { await post('/auth/impersonation/stop'); await start(); } catch (e) { showError(e); }
});
window.addEventListener('hashchange', () => { if (me) route(); });
start();
