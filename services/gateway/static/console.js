'use strict';
/*
 * Emomesh console: one page talking to the gateway (services/gateway) over HTTP and one WebSocket.
 * Bodies are the proto3 JSON mapping of protos/emotion/<area>/v1/: snake_case fields, enums as names
 * ("EMOTION_HAPPY"), bytes as base64. Unset message fields may be absent, hence the `?.` reads.
 *
 * Sections: helpers · HTTP · status banner · session & personas · chat · emotion cards & theme ·
 *           camera & face boxes · live stream and its polling fallback · push-to-talk · start-up.
 */

// ---- Constants and state ------------------------------------------------------------------------

// The order of EmotionDistribution.probabilities (common.proto's Emotion enum without UNSPECIFIED).
const EMOTIONS = ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral'];
const PERSONA_CUSTOM = 'PERSONA_KIND_CUSTOM';
const DEFAULT_PERSONA = 'PERSONA_KIND_DAILY_CHAT';

const FRAME_INTERVAL_MS = 125;          // ~8 frames/s to the live stream
const POLL_INTERVAL_MS = 1000;          // fallback path: one analyze-image a second
const STREAM_RETRY_MS = 10000;          // after the stream fails, try it again this much later
const READY_POLL_MS = 5000;             // GET /readyz period
const FACE_CLEAR_MS = 1000;             // boxes stay this long after the last frame with a face
const MAX_BUFFERED_BYTES = 256 * 1024;  // a few frames still queued in the socket: skip until it drains
const MIN_RECORDING_MS = 300;           // shorter presses are accidental taps
const MAX_FRAME = { width: 640, height: 480 };
const JPEG_QUALITY = 0.7;
const SESSION_KEY = 'emomesh.sessionId';
const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;  // what the dialog service accepts
const MIRROR_VIDEO = true;              // console.css mirrors #camera (a selfie view); boxes must follow

// What a person loses when a service is down, for the banner.
const SERVICE_IMPACT = {
  fusion: 'push-to-talk and live analysis will fail',
  dialog: 'replies will fail',
  vision: 'the once-a-second face analysis will fail',
};

// State the browser tests and a curious developer can read: window.emomeshConsole.
const app = { sessionId: '', lastAnalysis: null, lastGreeting: null, facesSeen: 0 };
window.emomeshConsole = app;

const ui = {};                          // every element with an id, camelCased: #chat-log -> ui.chatLog
let liveAvailable = true;               // GET /api/v1/config "live"
let chatQueue = Promise.resolve();      // greetings and replies run one at a time, in order
let cameraStream = null;
const live = { socket: null, frameSize: null, pollTimer: 0, retryTimer: 0,
  clearTimer: 0, pollBusy: false, pollStatus: '' };
const ptt = { held: false, micStream: null, recorder: null, chunks: [], startedAt: 0 };
// Live voice: the microphone streamed into the live stream as encoded audio (its own microphone stream, so
// push-to-talk can record and release its own meanwhile).
const voice = { on: false, stream: null, sending: Promise.resolve() };
const VOICE_CHUNK_MS = 250;             // MediaRecorder hands over encoded audio this often

// ---- Small helpers ------------------------------------------------------------------------------

/** A new element with a class and text. */
function el(tag, className, text = '') {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

/** Shows `text` in a message element, or hides the element when text is empty. */
function showMessage(element, text) {
  element.textContent = text || '';
  element.hidden = !text;
}

const percent = (value) => `${Math.round((Number(value) || 0) * 100)}%`;
const modalityName = (modality) => String(modality || '').replace('MODALITY_', '').toLowerCase();  // -> "vision"
const statusText = (status) =>  // "MODALITY_STATUS_LOW_CONFIDENCE" -> "low confidence"
  String(status || 'MODALITY_STATUS_MISSING').replace('MODALITY_STATUS_', '').replace(/_/g, ' ').toLowerCase();
const emotionColour = (label) =>  // the colours live in console.css only
  getComputedStyle(document.documentElement).getPropertyValue(`--emotion-${label}`).trim() || '#64748b';

/** "EMOTION_HAPPY" -> "happy"; '' for unspecified or unknown values. */
function emotionName(value) {
  if (typeof value === 'number') return EMOTIONS[value - 1] || '';  // tolerate numeric enums
  const name = String(value || '').replace(/^EMOTION_/, '').toLowerCase();
  return EMOTIONS.includes(name) ? name : '';
}

/** {label, confidence} of an EmotionDistribution, or null when it has no usable probabilities. */
function topEmotion(distribution) {
  const probabilities = distribution?.probabilities;
  if (!Array.isArray(probabilities) || probabilities.length !== EMOTIONS.length) return null;
  const label = emotionName(distribution.top);
  if (label) return { label, confidence: Number(distribution.confidence) || 0 };
  const best = probabilities.indexOf(Math.max(...probabilities));  // `top` missing: find it ourselves
  return { label: EMOTIONS[best], confidence: probabilities[best] };
}

function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(',', 2)[1] || '');  // drop "data:...;base64,"
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// ---- HTTP ---------------------------------------------------------------------------------------

/** An Error from a failed response, carrying the gateway's {"error": {"code", "message"}}. */
async function errorFrom(response) {
  const body = await response.json().catch(() => null);  // a proxy's HTML error page is not JSON
  const code = body?.error?.code || `HTTP ${response.status}`;
  const message = body?.error?.message || response.statusText || 'request failed';
  return Object.assign(new Error(message), { code, status: response.status });
}

/** Text for a person: the gateway's message and code, or plain words when the network failed. */
function describeError(error) {
  if (error instanceof TypeError) return 'the gateway did not answer';  // how fetch reports network failure
  return error.code ? `${error.message} (${error.code})` : error.message;
}

function post(path, body) {
  return fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

async function postJson(path, body) {
  const response = await post(path, body);
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** Reads an application/x-ndjson body as it arrives, calling onChunk with each parsed line. */
async function readNdjson(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      pending += decoder.decode(value || new Uint8Array(), { stream: !done });
      const lines = pending.split('\n');
      pending = done ? '' : lines.pop();  // the last piece may be half a line
      for (const line of lines) if (line.trim()) onChunk(JSON.parse(line));
      if (done) return;
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  }
}

// ---- Status banner: which services are down (GET /readyz every READY_POLL_MS) -------------------

async function pollReadiness() {
  let ready = false;
  let text;
  try {
    const body = await (await fetch('/readyz', { cache: 'no-store' })).json();  // a 503 has the same body
    ready = Boolean(body.ready);
    text = Object.entries(body.services || {})
      .filter(([, status]) => status !== 'SERVING')
      .map(([name, status]) => `${name} ${status === 'NOT_CONFIGURED' ? 'not configured' : 'unavailable'}: `
        + (SERVICE_IMPACT[name] || 'some features will fail'))
      .join(' · ');
  } catch (_) {
    text = 'The gateway is not answering: nothing works until it is back.';
  }
  ui.statusBanner.dataset.ready = String(ready);
  showMessage(ui.statusBanner, text);
  setTimeout(pollReadiness, READY_POLL_MS);
}

// ---- Session and personas -----------------------------------------------------------------------

/** A fresh session id, remembered so that a reload continues the same conversation. */
function newSessionId() {
  // randomUUID exists only in secure contexts (HTTPS, localhost); plain HTTP on a LAN gets hex.
  const id = window.crypto?.randomUUID ? crypto.randomUUID()
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
  try { localStorage.setItem(SESSION_KEY, id); } catch (_) { /* storage blocked: the id lasts until reload */ }
  return id;
}

function loadSessionId() {
  let stored = null;
  try { stored = localStorage.getItem(SESSION_KEY); } catch (_) { /* storage blocked */ }
  return stored && SESSION_ID_PATTERN.test(stored) ? stored : newSessionId();
}

function setSessionId(id) {
  app.sessionId = id;
  ui.sessionLabel.textContent = id.slice(0, 8);
  ui.sessionLabel.title = id;
}

async function startNewSession() {
  const previous = app.sessionId;
  setSessionId(newSessionId());  // switch first, so nothing new lands in the old session
  ui.chatLog.replaceChildren();
  try {
    await postJson('/api/v1/dialog/clear-history', { session_id: previous });
  } catch (error) {
    // 404: the old session was never stored or has expired, so there was nothing to clear.
    if (error.status !== 404) {
      ui.chatLog.append(el('p', 'chat-notice', `The old history was not cleared: ${describeError(error)}`));
    }
  }
  requestGreeting();
}

function activePersonaKind() {
  return document.querySelector('.persona.active')?.dataset.kind || DEFAULT_PERSONA;
}

/** The Persona message; the dialog service refuses a description on any kind but CUSTOM. */
function currentPersona() {
  const kind = activePersonaKind();
  return { kind, custom_description: kind === PERSONA_CUSTOM ? ui.customPersona.value.trim() : '' };
}

/** False (with a hint) while the custom persona has no description: the dialog service would refuse it. */
function personaIsComplete() {
  if (activePersonaKind() !== PERSONA_CUSTOM || ui.customPersona.value.trim()) return true;
  ui.customHint.textContent = 'Describe the persona, then press "Use this persona".';
  ui.customPersona.focus();
  return false;
}

function selectPersona(kind) {
  for (const button of document.querySelectorAll('.persona')) {
    button.classList.toggle('active', button.dataset.kind === kind);
    button.setAttribute('aria-pressed', String(button.dataset.kind === kind));
  }
  ui.customBox.hidden = kind !== PERSONA_CUSTOM;
  ui.customHint.textContent = '';
  if (personaIsComplete()) requestGreeting();
}

// ---- Chat ---------------------------------------------------------------------------------------

/** Runs chat work (greetings, replies) one after the other, so bubbles and history keep their order. */
function enqueue(task) {
  chatQueue = chatQueue.then(task).catch((error) => console.error('chat task failed', error));
}

function appendBubble(role, text = '') {
  const bubble = el('div', `bubble ${role}`);
  bubble.append(el('div', 'bubble-text', text));
  ui.chatLog.append(bubble);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  return bubble;
}

function appendAssistantBubble(kind) {
  const bubble = appendBubble('assistant');
  Object.assign(bubble.dataset, { kind, streaming: 'true', fallback: 'false' });
  return bubble;
}

/** Ends a reply; an offline fallback is marked visibly, with the reason on hover. */
function finishAssistantBubble(bubble, info) {
  bubble.dataset.streaming = 'false';
  if (!info?.fallback) return;
  bubble.dataset.fallback = 'true';
  bubble.title = info.fallback_reason || '';
  const note = el('span', 'fallback-note', 'offline reply — no LLM configured');
  note.title = bubble.title;
  bubble.append(note);
}

function failAssistantBubble(bubble, error) {
  bubble.dataset.streaming = 'false';
  bubble.classList.add('error');
  bubble.append(el('span', 'bubble-error', `⚠ ${describeError(error)}`));
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
}

/** Tags a user bubble with a chip such as "happy 87%"; the newest tag also drives the theme. */
function tagUserBubble(bubble, fused) {
  const top = topEmotion(fused?.distribution);
  if (!top) return;
  bubble.dataset.emotion = top.label;
  const chip = el('span', 'emotion-chip', `${top.label} ${percent(top.confidence)}`);
  chip.style.setProperty('--chip-colour', emotionColour(top.label));
  bubble.append(chip);
  setThemeEmotion(top.label);
}

function requestGreeting() {
  const request = { session_id: app.sessionId, persona: currentPersona() };
  enqueue(async () => {
    const bubble = appendAssistantBubble('greeting');
    try {
      const response = await postJson('/api/v1/dialog/greeting', request);
      app.lastGreeting = response;
      bubble.firstChild.textContent = response.text || '';
      finishAssistantBubble(bubble, response.info);
    } catch (error) {
      failAssistantBubble(bubble, error);
    }
  });
}

/**
 * Sends a user message. `emotion` (an EmotionContext) is what push-to-talk saw; without it the dialog
 * service may read the emotion from the words itself, and the bubble is tagged from its answer.
 */
function sendChat(message, emotion) {
  if (!personaIsComplete()) return false;
  const userBubble = appendBubble('user', message);
  const request = { session_id: app.sessionId, message, persona: currentPersona() };
  if (emotion) {
    request.emotion = emotion;
    tagUserBubble(userBubble, emotion.fused);
  }
  enqueue(() => streamReply(request, userBubble));
  return true;
}

async function streamReply(request, userBubble) {
  const bubble = appendAssistantBubble('reply');
  const text = bubble.firstChild;
  try {
    const response = await post('/api/v1/dialog/chat', request);
    if (!response.ok) throw await errorFrom(response);
    let info = null;
    await readNdjson(response, (chunk) => {
      if (typeof chunk.delta === 'string') {
        text.textContent += chunk.delta;
        ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
      } else if (chunk.done) {
        info = chunk.done;
      } else if (chunk.error) {  // the stream broke after it began
        throw Object.assign(new Error(chunk.error.message || 'the reply failed'), { code: chunk.error.code });
      }
    });
    if (!info) throw new Error('the reply stopped before it was complete');
    if (!text.textContent) text.textContent = info.reply || '';
    finishAssistantBubble(bubble, info);
    // A typed message had no emotion of its own: show the one the dialog service read from the words.
    if (!userBubble.dataset.emotion && info.emotion_source === 'EMOTION_SOURCE_TEXT_SERVICE') {
      tagUserBubble(userBubble, info.emotion?.fused);
    }
  } catch (error) {
    failAssistantBubble(bubble, error);
  }
}

function onChatSubmit(event) {
  event.preventDefault();  // the form exists so that Enter sends; it must never navigate
  const message = ui.chatInput.value.trim();
  if (message && sendChat(message, null)) ui.chatInput.value = '';
}

// ---- Emotion cards (a row of 7 bars each) and the theme colour ----------------------------------

/** Builds a card's 7 empty bars once; renderDistribution only changes their heights. */
function buildChart(card) {
  for (const label of EMOTIONS) {
    const bar = el('div', 'bar');
    bar.dataset.emotion = label;
    bar.style.setProperty('--bar-colour', `var(--emotion-${label})`);
    const track = el('span', 'bar-track');
    track.append(el('span', 'bar-fill'));
    bar.append(track, el('span', 'bar-label', label.slice(0, 3)));
    card.querySelector('.chart').append(bar);
  }
}

/** Fills a card's bars and headline from an EmotionDistribution (or empties them); returns its top. */
function renderDistribution(card, distribution) {
  const top = topEmotion(distribution);
  card.querySelectorAll('.bar').forEach((bar, i) => {
    const probability = top ? Number(distribution.probabilities[i]) || 0 : 0;
    bar.querySelector('.bar-fill').style.height = `${(probability * 100).toFixed(1)}%`;
    bar.title = `${EMOTIONS[i]} ${percent(probability)}`;
    bar.classList.toggle('top', top?.label === EMOTIONS[i]);
  });
  card.querySelector('.card-top').textContent = top ? `${top.label} ${percent(top.confidence)}` : '—';
  card.dataset.emotion = top ? top.label : '';
  card.dataset.confidence = top ? top.confidence.toFixed(2) : '';
  return top;
}

/** One modality's card: bars when it took part (status OK), else its status and detail, greyed out. */
function renderModality(card, result) {
  const ok = result?.status === 'MODALITY_STATUS_OK';
  card.classList.toggle('inactive', !ok);
  card.dataset.status = result?.status || 'MODALITY_STATUS_MISSING';
  renderDistribution(card, ok ? result.distribution : null);
  const status = ok ? `reliability ${percent(result.reliability)}` : statusText(result?.status);
  card.querySelector('.card-status').textContent = status + (result?.detail ? `: ${result.detail}` : '');
}

function renderFused(fused) {
  const top = renderDistribution(ui.fusedResult, fused?.distribution);
  const notes = [(fused?.weights || []).map((w) => `${modalityName(w.modality)} ${percent(w.weight)}`).join(' · ')];
  if (fused?.conflict) notes.push(`conflict: ${fused.conflict_detail || 'the modalities disagree'}`);
  ui.fusedResult.querySelector('.card-status').textContent = notes.filter(Boolean).join(' — ');
  if (top) setThemeEmotion(top.label);
}

/** The page's accent colour follows the newest emotion (console.css maps body[data-emotion]). */
function setThemeEmotion(label) {
  if (label && document.body.dataset.emotion !== label) document.body.dataset.emotion = label;
}

// ---- Camera and face boxes ----------------------------------------------------------------------

function mediaProblem(error, device) {
  const name = error?.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') {
    return device === 'camera'
      ? 'Camera access was denied. Allow the camera for this site to see face analysis.'
      : 'Microphone access was denied. Allow the microphone for this site to use push-to-talk.';
  }
  if (['NotFoundError', 'OverconstrainedError', 'NotReadableError'].includes(name)) {
    return device === 'camera' ? 'No camera found.' : 'No microphone found.';
  }
  return `The ${device} could not start: ${error?.message || name || 'unknown error'}`;
}

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage(ui.cameraMessage, 'The camera needs HTTPS or localhost.');
    return false;
  }
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    showMessage(ui.cameraMessage, mediaProblem(error, 'camera'));
    return false;
  }
  ui.camera.srcObject = cameraStream;
  // Muted autoplay is allowed; play() may still reject (a background tab) and the video then starts later.
  await ui.camera.play().catch(() => {});
  showMessage(ui.cameraMessage, '');
  return true;
}

const cameraReady = () => Boolean(cameraStream) && ui.camera.readyState >= 2 && ui.camera.videoWidth > 0;
const frameCanvas = document.createElement('canvas');

/** The current video frame as base64 JPEG (at most MAX_FRAME) with its size; null without a camera. */
function captureFrame() {
  if (!cameraReady()) return null;
  const { videoWidth, videoHeight } = ui.camera;
  const scale = Math.min(1, MAX_FRAME.width / videoWidth, MAX_FRAME.height / videoHeight);
  const width = Math.round(videoWidth * scale);
  const height = Math.round(videoHeight * scale);
  if (frameCanvas.width !== width || frameCanvas.height !== height) Object.assign(frameCanvas, { width, height });
  frameCanvas.getContext('2d').drawImage(ui.camera, 0, 0, width, height);
  const dataUrl = frameCanvas.toDataURL('image/jpeg', JPEG_QUALITY);
  return { base64: dataUrl.slice(dataUrl.indexOf(',') + 1), width, height };
}

/** Where the picture sits inside the <video> box (object-fit: contain may letterbox it). */
function videoContentRect() {
  const { clientWidth: boxWidth, clientHeight: boxHeight, videoWidth, videoHeight } = ui.camera;
  const scale = Math.min(boxWidth / videoWidth, boxHeight / videoHeight) || 0;
  const width = videoWidth * scale;
  const height = videoHeight * scale;
  return { x: (boxWidth - width) / 2, y: (boxHeight - height) / 2, width, height, boxWidth, boxHeight };
}

/** The overlay's context, sized to the displayed video and drawing in CSS pixels (sharp on HiDPI). */
function overlayContext(rect) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.round(rect.boxWidth * dpr);
  const height = Math.round(rect.boxHeight * dpr);
  if (ui.overlay.width !== width || ui.overlay.height !== height) Object.assign(ui.overlay, { width, height });
  const context = ui.overlay.getContext('2d');
  context.setTransform(dpr, 0, 0, dpr, 0, 0);
  context.clearRect(0, 0, rect.boxWidth, rect.boxHeight);
  return context;
}

function clearOverlay() {
  ui.overlay.getContext('2d').clearRect(0, 0, ui.overlay.width, ui.overlay.height);
}

/** Draws each face's box and top expression, scaled from the analysed frame to the displayed video. */
function drawFaceBoxes(faces, frameSize) {
  if (!cameraReady() || !frameSize?.width || !frameSize?.height) return;
  const rect = videoContentRect();
  const context = overlayContext(rect);
  const scaleX = rect.width / frameSize.width;
  const scaleY = rect.height / frameSize.height;
  context.lineWidth = 3;
  context.font = '600 14px system-ui, sans-serif';
  for (const face of faces) {
    const { x = 0, y = 0, width = 0, height = 0 } = face.box || {};
    // The video is shown mirrored, so the box is mirrored too.
    const left = rect.x + (MIRROR_VIDEO ? rect.width - (x + width) * scaleX : x * scaleX);
    const top = rect.y + y * scaleY;
    const emotion = topEmotion(face.distribution);
    const colour = emotionColour(emotion?.label || 'neutral');
    context.strokeStyle = colour;
    context.strokeRect(left, top, width * scaleX, height * scaleY);
    if (!emotion) continue;
    const label = `${emotion.label} ${percent(emotion.confidence)}`;
    const labelBottom = Math.max(top, 20);  // a face at the top edge keeps its label on screen
    context.fillStyle = colour;
    context.fillRect(left - 1.5, labelBottom - 20, context.measureText(label).width + 10, 20);
    context.fillStyle = '#fff';
    context.fillText(label, left + 4, labelBottom - 5);
  }
}

/** One faces result, from the stream or a poll. Boxes clear FACE_CLEAR_MS after the last face. */
function showFaces(faces, frameSize, source) {
  ui.overlay.dataset.faceCount = String(faces.length);
  ui.overlay.dataset.source = source;
  if (!faces.length) return;  // keep the last boxes a moment: one missed detection must not flicker
  app.facesSeen += 1;
  drawFaceBoxes(faces, frameSize);
  clearTimeout(live.clearTimer);
  live.clearTimer = setTimeout(clearOverlay, FACE_CLEAR_MS);
}

/** The "Live" card: the stream's smoothed fused state or, when polling, the largest face's scores. */
function showLiveDistribution(distribution, source) {
  ui.liveFused.querySelector('.card-source').textContent = source;
  const top = renderDistribution(ui.liveFused, distribution);
  if (top) setThemeEmotion(top.label);
}

// ---- Live analysis: the WebSocket stream, with a once-a-second analyze-image fallback -----------

function startLiveAnalysis() {
  if (liveAvailable) return openStream();
  live.pollStatus = 'Live streaming is not available on this gateway: analysing one frame a second.';
  ui.liveStatus.textContent = live.pollStatus;
  startPolling();
}

function openStream() {
  clearTimeout(live.retryTimer);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}/api/v1/fusion/stream`);
  } catch (error) {
    return streamFailed(`it could not be opened (${error.message})`);
  }
  live.socket = socket;
  let ended = false;
  // `closed`, error and close may all arrive for one failure: the first reason wins.
  const end = (why) => {
    if (ended) return;
    ended = true;
    // This socket's own timer: a replaced socket's close event may come after its successor opened.
    clearInterval(socket.frameTimer);
    stopVoiceRecorder(socket);
    if (live.socket === socket) live.socket = null;
    if (socket.readyState === WebSocket.OPEN) socket.close();
    if (!socket.replaced) streamFailed(why);  // a stream closed to start another one is no failure
  };
  socket.onopen = () => {
    // A stream's audio encoding is fixed by its start: with live voice, the browser's encoded audio
    // (WebM/Opus from MediaRecorder) goes in as it is, and words are transcribed as they come.
    const start = voice.on
      ? { audio_encoding: 'AUDIO_ENCODING_CONTAINER', settings: { transcribe: true } }
      : { settings: { transcribe: false } };
    socket.send(JSON.stringify({ start }));
    socket.startedAt = performance.now();  // frame timestamps count from their own stream's start
    stopPolling();
    ui.liveStatus.textContent = voice.on
      ? 'Live: streaming about 8 frames a second and the microphone.'
      : 'Live: streaming about 8 frames a second.';
    socket.frameTimer = setInterval(() => sendFrame(socket), FRAME_INTERVAL_MS);
    if (voice.on) startVoiceRecorder(socket);
  };
  socket.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (_) { return; }
    if (!message.closed) return handleStreamEvent(message);
    const { code, message: text } = message.closed;
    end(`the stream closed (${code || 'no code'}${text ? `: ${text}` : ''})`);
  };
  socket.onerror = () => end('the connection failed');
  socket.onclose = (event) => end(`the connection closed (code ${event.code})`);
}

function streamFailed(why) {
  live.pollStatus = `Live stream unavailable: ${why}. Analysing one frame a second instead; `
    + `retrying in ${STREAM_RETRY_MS / 1000} s.`;
  ui.liveStatus.textContent = live.pollStatus;
  startPolling();
  live.retryTimer = setTimeout(openStream, STREAM_RETRY_MS);
}

/** Sends the current frame, unless the socket still holds unsent ones (backpressure: skip it). */
function sendFrame(socket) {
  if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > MAX_BUFFERED_BYTES) return;
  const frame = captureFrame();
  if (!frame) return;
  live.frameSize = frame;  // faces events give boxes in this frame's pixels
  const timestamp = (performance.now() - socket.startedAt) / 1000;
  socket.send(JSON.stringify({ frame: { encoded: frame.base64, timestamp_s: timestamp } }));
}

function handleStreamEvent(event) {
  if (event.faces) {
    showFaces(event.faces.faces || [], live.frameSize, 'stream');
  } else if (event.speech) {
    showLiveSpeech(event.speech);
  } else if (event.transcript) {
    ui.liveWords.textContent = event.transcript.text || '';
  } else if (event.state) {
    showLiveDistribution(event.state.fused?.distribution, 'fused, smoothed');
  } else if (event.error) {
    console.debug('live stream item error', event.error);  // a bad frame; the stream goes on
  }
}

// ---- Live voice: the microphone into the same stream --------------------------------------------

/** A 3-s window of the voice lane: its top emotion, or that it heard no speech (no label then). */
function showLiveSpeech(speech) {
  if (!speech.speech_detected || !speech.distribution) {
    ui.liveVoiceEmotion.textContent = 'no speech';
    return;
  }
  const top = topEmotion(speech.distribution);
  if (!top) return;
  ui.liveVoiceEmotion.textContent = `${top.label} ${percent(top.confidence)}`;
  ui.liveVoiceLine.dataset.emotion = top.label;
}

async function setLiveVoice(on) {
  if (on) {
    if (!navigator.mediaDevices?.getUserMedia) {
      ui.liveVoice.checked = false;
      return showMessage(ui.micMessage, 'The microphone needs HTTPS or localhost.');
    }
    try {
      voice.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      ui.liveVoice.checked = false;
      return showMessage(ui.micMessage, mediaProblem(error, 'microphone'));
    }
    showMessage(ui.micMessage, '');
  } else {
    voice.stream?.getTracks().forEach((track) => track.stop());
    voice.stream = null;
  }
  voice.on = on;
  ui.liveVoiceLine.hidden = !on;
  ui.liveVoiceLine.dataset.emotion = '';
  ui.liveVoiceEmotion.textContent = on ? 'listening…' : '—';
  ui.liveWords.textContent = '';
  restartStream();
}

/** Ends the current stream on purpose and opens a new one (its start says whether audio comes). */
function restartStream() {
  if (!liveAvailable) return;
  const old = live.socket;
  if (old) {
    old.replaced = true;
    old.close();
  }
  clearTimeout(live.retryTimer);
  openStream();
}

function startVoiceRecorder(socket) {
  if (!voice.stream || typeof MediaRecorder === 'undefined') return;
  const opus = 'audio/webm;codecs=opus';
  const recorder = new MediaRecorder(voice.stream, MediaRecorder.isTypeSupported?.(opus) ? { mimeType: opus } : {});
  // Chunks are sent in the order they were recorded: one encoded stream, cut anywhere.
  recorder.ondataavailable = (event) => {
    if (!event.data?.size) return;
    voice.sending = voice.sending.then(async () => {
      const data = await blobToBase64(event.data);
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ audio: { data } }));
    }).catch(() => {});
  };
  recorder.start(VOICE_CHUNK_MS);
  socket.voiceRecorder = recorder;  // each stream has its own recording: a new stream needs a new header
}

function stopVoiceRecorder(socket) {
  if (socket.voiceRecorder && socket.voiceRecorder.state !== 'inactive') socket.voiceRecorder.stop();
  socket.voiceRecorder = null;
}

function startPolling() {
  if (!live.pollTimer) live.pollTimer = setInterval(pollFrame, POLL_INTERVAL_MS);
}

function stopPolling() {
  clearInterval(live.pollTimer);
  live.pollTimer = 0;
}

async function pollFrame() {
  const frame = live.pollBusy ? null : captureFrame();  // a slow service: never pile up requests
  if (!frame) return;
  live.pollBusy = true;
  try {
    const result = await postJson('/api/v1/vision/analyze-image', { image: frame.base64 });
    const size = { width: result.image_width || frame.width, height: result.image_height || frame.height };
    showFaces(result.faces || [], size, 'poll');
    if (result.primary) showLiveDistribution(result.primary, 'largest face');
    ui.liveStatus.textContent = live.pollStatus;
  } catch (error) {
    ui.liveStatus.textContent = `${live.pollStatus} Face analysis failed: ${describeError(error)}`;
  } finally {
    live.pollBusy = false;
  }
}

// ---- Push-to-talk: hold to record; on release analyse face + voice + words, then reply ----------

const PTT_LABELS = { idle: 'Hold to talk', recording: 'Recording… release to send', analysing: 'Analysing…' };

function setPttState(state) {
  ui.ptt.dataset.state = state;
  ui.ptt.setAttribute('aria-busy', String(state === 'analysing'));
  ui.ptt.querySelector('.ptt-label').textContent = PTT_LABELS[state];
}

/** The microphone stream, asked for the first time it is needed; null (with a message) if unavailable. */
async function getMicrophone() {
  if (ptt.micStream?.getAudioTracks().some((track) => track.readyState === 'live')) return ptt.micStream;
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage(ui.micMessage, 'The microphone needs HTTPS or localhost.');
    return null;
  }
  try {
    ptt.micStream = await navigator.mediaDevices.getUserMedia({ audio: true });
    return ptt.micStream;
  } catch (error) {
    showMessage(ui.micMessage, mediaProblem(error, 'microphone'));
    return null;
  }
}

/** Stops the microphone between turns, so the browser does not show it in use while nobody talks; the next
 * press asks again (without a prompt once the site is allowed). */
function releaseMicrophone() {
  ptt.micStream?.getTracks().forEach((track) => track.stop());
  ptt.micStream = null;
}

async function startTalking() {
  if (ptt.held || ui.ptt.dataset.state !== 'idle') return;
  ptt.held = true;
  showMessage(ui.micMessage, '');
  showMessage(ui.pttHint, '');
  if (typeof MediaRecorder === 'undefined') {
    ptt.held = false;
    return showMessage(ui.micMessage, 'This browser cannot record audio.');
  }
  const stream = await getMicrophone();
  if (!stream || !ptt.held) {
    // No microphone, or released while the permission prompt was open: nothing to record.
    if (stream) showMessage(ui.pttHint, 'Microphone ready: hold the button while you speak.');
    releaseMicrophone();
    ptt.held = false;
    return;
  }
  try {
    const opus = 'audio/webm;codecs=opus';  // what the audio service decodes best; else the browser's default
    const recorder = new MediaRecorder(stream, MediaRecorder.isTypeSupported?.(opus) ? { mimeType: opus } : {});
    const chunks = [];
    recorder.ondataavailable = (event) => { if (event.data?.size) chunks.push(event.data); };
    recorder.start();
    Object.assign(ptt, { recorder, chunks, startedAt: performance.now() });
    setPttState('recording');
  } catch (error) {
    ptt.held = false;
    showMessage(ui.micMessage, `Recording could not start: ${error.message}`);
  }
}

function stopTalking() {
  ptt.held = false;
  const { recorder, chunks } = ptt;
  if (!recorder || recorder.state === 'inactive') return;
  ptt.recorder = null;
  const durationMs = performance.now() - ptt.startedAt;
  // The last data arrives just before `stop`, so the recording is only complete then.
  recorder.onstop = () => {
    releaseMicrophone();
    if (durationMs >= MIN_RECORDING_MS && chunks.length) {
      analyseTurn(new Blob(chunks, { type: recorder.mimeType || 'audio/webm' }));
    } else {
      setPttState('idle');
      showMessage(ui.pttHint, 'Too short: hold the button while you speak.');
    }
  };
  setPttState('analysing');  // busy from release on: encoding the last chunk takes a moment too
  recorder.stop();
}

/** POST /api/v1/fusion/analyze with the frame, the recording and the typed text; then chat. */
async function analyseTurn(audio) {
  showMessage(ui.analysisMessage, '');
  const typed = ui.typedText.value.trim();
  try {
    const request = { audio: await blobToBase64(audio), speaker: 'user' };
    const frame = captureFrame();
    if (frame) request.image = frame.base64;
    if (typed) request.text = typed;
    const response = await postJson('/api/v1/fusion/analyze', request);
    app.lastAnalysis = response;
    showAnalysis(response);
    // The spoken words are the message; the typed text stands in when nothing was transcribed.
    const message = (response.audio?.transcript?.text || '').trim() || typed;
    if (message && sendChat(message, { fused: response.fused, modalities: response.modalities || [] })) {
      ui.typedText.value = '';
    }
  } catch (error) {
    showMessage(ui.analysisMessage, `Analysis failed: ${describeError(error)}`);
  } finally {
    setPttState('idle');
  }
}

function showAnalysis(response) {
  const modalities = response.modalities || [];
  for (const card of document.querySelectorAll('.card[data-modality]')) {
    renderModality(card, modalities.find((result) => result.modality === card.dataset.modality));
  }
  renderFused(response.fused);
  ui.transcript.textContent = response.audio?.transcript?.text || '';
}

function isTextField(element) {
  return Boolean(element?.isContentEditable) || /^(INPUT|TEXTAREA|SELECT)$/.test(element?.tagName);
}

function bindPushToTalk() {
  ui.ptt.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    event.preventDefault();  // no text selection or focus change while holding
    startTalking();
  });
  for (const type of ['pointerup', 'pointerleave', 'pointercancel']) ui.ptt.addEventListener(type, stopTalking);
  ui.ptt.addEventListener('contextmenu', (event) => event.preventDefault());  // a long press on a phone
  // Space talks anywhere but in a text field; preventDefault stops it scrolling or pressing a button.
  const onSpace = (handler) => (event) => {
    if (event.code !== 'Space' || isTextField(event.target)) return;
    event.preventDefault();
    handler(event);
  };
  document.addEventListener('keydown', onSpace((event) => { if (!event.repeat) startTalking(); }));
  document.addEventListener('keyup', onSpace(stopTalking));
}

// ---- Start-up -----------------------------------------------------------------------------------

function bindEvents() {
  for (const button of document.querySelectorAll('.persona')) {
    button.addEventListener('click', () => selectPersona(button.dataset.kind));
  }
  ui.customApply.addEventListener('click', () => selectPersona(PERSONA_CUSTOM));
  ui.newSession.addEventListener('click', startNewSession);
  ui.chatForm.addEventListener('submit', onChatSubmit);
  ui.liveVoice.addEventListener('change', () => setLiveVoice(ui.liveVoice.checked));
  bindPushToTalk();
}

async function loadConfig() {
  // Without an answer assume live streaming: if the stream fails too, it falls back to polling anyway.
  const response = await fetch('/api/v1/config', { cache: 'no-store' }).catch(() => null);
  return response?.ok ? response.json().catch(() => ({})) : {};
}

async function init() {
  for (const node of document.querySelectorAll('[id]')) {
    ui[node.id.replace(/-(\w)/g, (_, letter) => letter.toUpperCase())] = node;
  }
  for (const card of document.querySelectorAll('.card')) buildChart(card);
  bindEvents();
  setSessionId(loadSessionId());
  pollReadiness();
  selectPersona(DEFAULT_PERSONA);  // greets in the default persona
  const config = await loadConfig();
  liveAvailable = config.live !== false;
  if (await startCamera()) startLiveAnalysis();
}

init();
