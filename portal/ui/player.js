// The player: an <audio> element streaming the API's Range-capable media endpoint, a timeline
// with one lane per channel (click to seek), speed, and the transcript with the spoken word
// highlighted (click a word to seek to it).

import { el } from './dom.js';

const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 2];

function fmt(s) {
  if (!Number.isFinite(s)) return '0:00';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** Builds the player for a recording; `lanes` names each channel. */
export function player(recordingId, lanes, knownSeconds) {
  const audio = el('audio', { id: 'audio', preload: 'metadata', src: `/api/v1/recordings/${recordingId}/media` });
  const playhead = el('div', { class: 'playhead', id: 'playhead' });
  const timeline = el('div', { class: 'timeline', id: 'timeline', title: 'Click to seek' },
    ...lanes.map((name, i) => el('div', { class: 'lane', 'data-channel': String(i) }, name)),
    playhead);
  const time = el('span', { id: 'time' }, '0:00 / 0:00');
  const play = el('button', { id: 'play', type: 'button' }, 'Play');
  const speed = el('select', { id: 'speed', 'aria-label': 'Speed' },
    ...SPEEDS.map((s) => el('option', { value: String(s), selected: s === 1 ? '' : null }, `${s}×`)));
  const duration = () => (Number.isFinite(audio.duration) && audio.duration > 0 ? audio.duration : knownSeconds);

  const update = () => {
    const d = duration();
    const frac = d > 0 ? Math.min(audio.currentTime / d, 1) : 0;
    playhead.style.left = `${(frac * 100).toFixed(2)}%`;
    playhead.dataset.fraction = frac.toFixed(4);
    time.textContent = `${fmt(audio.currentTime)} / ${fmt(d)}`;
    play.textContent = audio.paused ? 'Play' : 'Pause';
  };
  for (const ev of ['timeupdate', 'seeked', 'loadedmetadata', 'play', 'pause', 'ended']) audio.addEventListener(ev, update);
  play.addEventListener('click', () => (audio.paused ? audio.play() : audio.pause()));
  speed.addEventListener('change', () => { audio.playbackRate = Number(speed.value); });
  timeline.addEventListener('click', (e) => {
    const r = timeline.getBoundingClientRect();
    const d = duration();
    if (d > 0) audio.currentTime = Math.max(0, Math.min(1, (e.clientX - r.left) / r.width)) * d;
  });
  const node = el('div', { class: 'player' }, audio, timeline,
    el('div', { class: 'controls' }, play, time, el('label', {}, 'Speed ', speed)));
  return { node, audio };
}

/** The transcript pane; words are `[{w, start, end}]` in seconds. */
export function transcriptPane(transcripts, audio, lanes) {
  const spans = [];
  const parts = transcripts.map((t) => {
    let words = [];
    try { words = JSON.parse(t.words || '[]'); } catch { words = []; }
    const body = words.length
      ? words.map((w) => {
        const s = el('span', { class: 'word', 'data-start': String(w.start) }, `${w.w} `);
        s.addEventListener('click', () => { audio.currentTime = Number(w.start); });
        spans.push({ s, start: Number(w.start), end: Number(w.end) });
        return s;
      })
      : [t.body];
    return el('p', {}, el('strong', {}, `${lanes[t.channel] || `Channel ${t.channel + 1}`}: `), ...body);
  });
  audio.addEventListener('timeupdate', () => {
    const now = audio.currentTime;
    for (const { s, start, end } of spans) s.classList.toggle('spoken', now >= start && now < end);
  });
  return el('div', { class: 'transcript', id: 'transcript' }, ...parts);
}
