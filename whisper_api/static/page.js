// The test page: sends audio through the public transcription route, as any client does, and
// shows the answer. No framework, no build step, nothing fetched from outside this server.
"use strict";

const API_VERSION = "2024-06-01";
const KEY_STORAGE = "whisper-api-key";
const POLL_MILLISECONDS = 500;

const LABELS = {
  en: {
    apiKey: "API key",
    apiKeyHint: "Kept in this tab's session storage only. Any text works when the server has no api_keys.",
    audioFile: "Audio file",
    dropHint: "or drop a file here",
    record: "Record",
    stopRecording: "Stop recording",
    recording: "Recording…",
    recorded: "Recording",
    deployment: "Deployment",
    task: "Task",
    transcribe: "Transcribe",
    translate: "Translate to English",
    language: "Language",
    detect: "Detect",
    responseFormat: "Response format",
    wordTimestamps: "Word timestamps",
    prompt: "Prompt",
    promptHint: "Names and terms the audio uses (optional)",
    send: "Send",
    text: "Text",
    segments: "Segments",
    raw: "Raw response",
    download: "Download",
    chooseFile: "Choose or drop an audio file first.",
    needKey: "Enter the API key first.",
    waiting: "Waiting for the model",
    running: "Running",
    uploading: "Uploading",
    done: "Done",
    failed: "Failed",
    seconds: "s",
    retryAfter: "Retry after",
    serverUnreachable: "The server did not answer",
    microphoneDenied: "The microphone is not available",
  },
  ja: {
    apiKey: "API キー",
    apiKeyHint: "このタブのセッションストレージにだけ保存します。サーバーに api_keys がなければ任意の文字列で使えます。",
    audioFile: "音声ファイル",
    dropHint: "またはここにドロップ",
    record: "録音",
    stopRecording: "録音を止める",
    recording: "録音中…",
    recorded: "録音",
    deployment: "デプロイ",
    task: "処理",
    transcribe: "文字起こし",
    translate: "英語に翻訳",
    language: "言語",
    detect: "自動判定",
    responseFormat: "応答形式",
    wordTimestamps: "単語のタイムスタンプ",
    prompt: "プロンプト",
    promptHint: "音声に出てくる名前や用語（任意）",
    send: "送信",
    text: "テキスト",
    segments: "セグメント",
    raw: "応答の中身",
    download: "ダウンロード",
    chooseFile: "先に音声ファイルを選ぶかドロップしてください。",
    needKey: "先に API キーを入力してください。",
    waiting: "モデルの順番待ち",
    running: "処理中",
    uploading: "アップロード中",
    done: "完了",
    failed: "失敗",
    seconds: "秒",
    retryAfter: "再試行まで",
    serverUnreachable: "サーバーから応答がありません",
    microphoneDenied: "マイクを使えません",
  },
};

const language = (navigator.languages || [navigator.language || "en"])
  .some((tag) => String(tag).toLowerCase().startsWith("ja")) ? "ja" : "en";
const labels = LABELS[language];

const $ = (id) => document.getElementById(id);
let chosenAudio = null; // {blob, name}
let audioUrl = null;
let segmentItems = []; // [{start, end, element, words: [{start, end, element}]}]

function applyLabels() {
  document.documentElement.lang = language;
  for (const element of document.querySelectorAll("[data-label]")) {
    element.textContent = labels[element.dataset.label];
  }
  for (const element of document.querySelectorAll("[data-placeholder]")) {
    element.placeholder = labels[element.dataset.placeholder];
  }
}

function newRequestId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // not a secure context (http on the LAN)
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function keyHeaders() {
  return { "api-key": $("api-key").value.trim() };
}

async function loadServerInfo() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    $("server-info").textContent = `${health.model} · ${health.device} (${health.device_name}) · ${health.dtype}`;
    const select = $("deployment");
    for (const name of health.deployments) select.add(new Option(name, name));
  } catch (error) {
    $("server-info").textContent = `${labels.serverUnreachable}: ${error}`;
  }
}

// The file input shows what it chose; a dropped file or a recording is named beside it instead.
function chooseAudio(blob, name, fromInput = false) {
  chosenAudio = { blob, name };
  if (!fromInput) $("audio-file").value = "";
  $("file-name").textContent = fromInput ? "" : name;
}

function setUpFileInputs() {
  $("audio-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) chooseAudio(file, file.name, true);
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) chooseAudio(file, file.name);
  });
  setUpRecorder();
}

function setUpRecorder() {
  // the microphone needs a secure context (localhost counts) and MediaRecorder
  if (!window.isSecureContext || !navigator.mediaDevices || !window.MediaRecorder) return;
  const button = $("record");
  button.hidden = false;
  let recorder = null;
  button.addEventListener("click", async () => {
    if (recorder) { recorder.stop(); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      showError(`${labels.microphoneDenied}: ${error.message}`);
      return;
    }
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (event) => parts.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      const type = recorder.mimeType || "audio/webm";
      const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      chooseAudio(new Blob(parts, { type }), `${labels.recorded}.${extension}`);
      recorder = null;
      button.textContent = labels.record;
    });
    recorder.start();
    button.textContent = labels.stopRecording;
    $("file-name").textContent = labels.recording;
  });
}

function buildForm() {
  const form = new FormData();
  form.append("file", chosenAudio.blob, chosenAudio.name);
  const responseFormat = $("response-format").value;
  form.append("response_format", responseFormat);
  if ($("task").value === "transcriptions" && $("language").value) form.append("language", $("language").value);
  if ($("prompt").value.trim()) form.append("prompt", $("prompt").value.trim());
  if (responseFormat === "verbose_json" && $("task").value === "transcriptions" && $("word-timestamps").checked) {
    form.append("timestamp_granularities[]", "segment");
    form.append("timestamp_granularities[]", "word");
  }
  return form;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(response) {
  let message = `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = `${response.status}: ${body.error.message}`;
  } catch (ignored) { /* not the envelope: keep the status */ }
  const retryAfter = response.headers.get("Retry-After");
  if (retryAfter) message += ` (${labels.retryAfter} ${retryAfter} ${labels.seconds})`;
  return message;
}

// Elapsed time from the page's clock, progress from GET /v1/jobs/<request id> while it runs.
function watchProgress(requestId, started) {
  const status = $("run-status");
  const bar = $("progress");
  let state = labels.uploading;
  let stopped = false;
  bar.hidden = false;
  bar.removeAttribute("value"); // indeterminate until the server reports
  const tick = setInterval(() => {
    const elapsed = ((performance.now() - started) / 1000).toFixed(1);
    status.textContent = `${state} · ${elapsed} ${labels.seconds}`;
  }, 100);
  const poll = async () => {
    if (stopped) return;
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(requestId)}`, { headers: keyHeaders() });
      if (response.ok && !stopped) {
        const job = await response.json();
        if (job.status === "queued") state = labels.waiting;
        if (job.status === "running") {
          state = `${labels.running} ${Math.round(job.progress * 100)}%`;
          bar.value = job.progress;
        }
      }
    } catch (ignored) { /* the next poll tries again */ }
    if (!stopped) setTimeout(poll, POLL_MILLISECONDS);
  };
  setTimeout(poll, POLL_MILLISECONDS);
  return (finalState) => {
    stopped = true;
    clearInterval(tick);
    const elapsed = ((performance.now() - started) / 1000).toFixed(1);
    status.textContent = `${finalState} · ${elapsed} ${labels.seconds}`;
    bar.hidden = true;
  };
}

async function send(event) {
  event.preventDefault();
  showError("");
  const key = $("api-key").value.trim();
  if (!key) { showError(labels.needKey); return; }
  if (!chosenAudio) { showError(labels.chooseFile); return; }
  sessionStorage.setItem(KEY_STORAGE, key);
  const deployment = encodeURIComponent($("deployment").value);
  const url = `/openai/deployments/${deployment}/audio/${$("task").value}?api-version=${API_VERSION}`;
  const requestId = newRequestId();
  const responseFormat = $("response-format").value;
  const button = $("send");
  button.disabled = true;
  const stop = watchProgress(requestId, performance.now());
  try {
    const response = await fetch(url, {
      method: "POST", body: buildForm(), headers: { ...keyHeaders(), "x-request-id": requestId },
    });
    if (!response.ok) {
      stop(labels.failed);
      showError(await errorMessage(response));
      return;
    }
    const body = await response.text();
    stop(labels.done);
    showResult(responseFormat, body);
  } catch (error) {
    stop(labels.failed);
    showError(`${labels.serverUnreachable}: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function formatTime(seconds, marker = ".", alwaysHours = true) {
  let milliseconds = Math.max(0, Math.round(seconds * 1000));
  const hours = Math.floor(milliseconds / 3600000); milliseconds -= hours * 3600000;
  const minutes = Math.floor(milliseconds / 60000); milliseconds -= minutes * 60000;
  const whole = Math.floor(milliseconds / 1000); milliseconds -= whole * 1000;
  const pad = (value, width = 2) => String(value).padStart(width, "0");
  const hoursPart = alwaysHours || hours ? `${pad(hours)}:` : "";
  return `${hoursPart}${pad(minutes)}:${pad(whole)}${marker}${pad(milliseconds, 3)}`;
}

// WebVTT's voice span for a speaker, as formats.py writes it.
function voiceTag(speaker) {
  if (!speaker) return "";
  return `<v ${oneLine(speaker).replace(/&/g, "&amp;").replace(/>/g, "&gt;")}>`;
}

// Subtitles from the verbose_json segments, written as the server's formats.py writes them.
function cues(segments) {
  return segments.filter((segment) => segment.text.trim() && segment.end > segment.start);
}
const oneLine = (text) => text.replace(/[ \t]*[\r\n]+[ \t]*/g, " ").trim();

function toSrt(segments) {
  const blocks = cues(segments).map((segment, index) =>
    `${index + 1}\n${formatTime(segment.start, ",")} --> ${formatTime(segment.end, ",")}\n${segment.speaker ? `${segment.speaker}: ` : ""}${oneLine(segment.text)}\n`);
  return blocks.join("\n") + (blocks.length ? "\n" : "");
}

function toVtt(segments) {
  const escape = (text) => {
    let escaped = oneLine(text).replace(/&/g, "&amp;").replace(/</g, "&lt;");
    while (escaped.includes("-->")) escaped = escaped.replace(/-->/g, "->");
    return escaped;
  };
  const blocks = ["WEBVTT\n"].concat(cues(segments).map((segment) =>
    `${formatTime(segment.start, ".")} --> ${formatTime(segment.end, ".")}\n${voiceTag(segment.speaker)}${escape(segment.text)}\n`));
  return blocks.join("\n") + "\n";
}

function downloadButton(label, fileName, type, content) {
  const link = document.createElement("a");
  link.className = "button secondary";
  link.textContent = `${labels.download} ${label}`;
  link.download = fileName;
  link.href = URL.createObjectURL(new Blob([content], { type }));
  link.dataset.format = label;
  return link;
}

function baseName() {
  return (chosenAudio.name.replace(/\.[^.]*$/, "") || "audio").replace(/[\\/:*?"<>|]/g, "_");
}

function showResult(responseFormat, body) {
  $("result").hidden = false;
  $("raw").textContent = body;
  const downloads = $("downloads");
  downloads.replaceChildren();
  segmentItems = [];
  $("segments").replaceChildren();
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(chosenAudio.blob);
  $("player").src = audioUrl;
  const name = baseName();
  if (responseFormat === "json" || responseFormat === "verbose_json" || responseFormat === "diarized_json") {
    const parsed = JSON.parse(body);
    $("raw").textContent = JSON.stringify(parsed, null, 2);
    $("transcript-text").textContent = parsed.text;
    const segments = parsed.segments || [];
    if (segments.length) {
      showSegments(segments, parsed.words || []);
      downloads.append(
        downloadButton("srt", `${name}.srt`, "application/x-subrip;charset=utf-8", toSrt(segments)),
        downloadButton("vtt", `${name}.vtt`, "text/vtt;charset=utf-8", toVtt(segments)),
      );
    }
    downloads.append(downloadButton("json", `${name}.json`, "application/json;charset=utf-8", body));
  } else {
    $("transcript-text").textContent = responseFormat === "text" ? body : "";
    const extension = responseFormat === "text" ? "txt" : responseFormat;
    downloads.append(downloadButton(responseFormat, `${name}.${extension}`, "text/plain;charset=utf-8", body));
  }
  $("segments-heading").hidden = segmentItems.length === 0;
}

function showSegments(segments, words) {
  const list = $("segments");
  for (const segment of segments) {
    const item = document.createElement("li");
    item.className = "segment";
    item.tabIndex = 0;
    item.dataset.start = segment.start;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `${formatTime(segment.start, ".", false)} – ${formatTime(segment.end, ".", false)}`;
    const text = document.createElement("span");
    text.className = "segment-text";
    const entry = { start: segment.start, end: segment.end, element: item, words: [] };
    const own = words.filter((word) => word.start >= segment.start - 0.01 && word.start < segment.end);
    if (own.length) {
      for (const word of own) {
        const span = document.createElement("span");
        span.className = "word";
        span.textContent = word.word;
        text.append(span);
        entry.words.push({ start: word.start, end: word.end, element: span });
      }
    } else {
      text.textContent = segment.text.trim();
    }
    if (segment.speaker) {
      const speaker = document.createElement("span");
      speaker.className = "speaker";
      speaker.textContent = segment.speaker;
      item.classList.add("with-speaker");
      item.append(time, speaker, text);
    } else {
      item.append(time, text);
    }
    const play = () => {
      const player = $("player");
      player.currentTime = segment.start;
      player.play().catch(() => { /* the browser may refuse to play; the position still moves */ });
    };
    item.addEventListener("click", play);
    item.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") play(); });
    list.append(item);
    segmentItems.push(entry);
  }
}

function highlightPlaying() {
  const now = $("player").currentTime;
  for (const segment of segmentItems) {
    const playing = now >= segment.start && now < segment.end;
    segment.element.classList.toggle("playing", playing);
    for (const word of segment.words) word.element.classList.toggle("playing", playing && now >= word.start && now < word.end);
  }
}

function updateWordOption() {
  const possible = $("response-format").value === "verbose_json" && $("task").value === "transcriptions";
  $("word-timestamps").disabled = !possible;
  $("language").disabled = $("task").value !== "transcriptions";
}

document.addEventListener("DOMContentLoaded", () => {
  applyLabels();
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim()));
  setUpFileInputs();
  $("request-form").addEventListener("submit", send);
  $("response-format").addEventListener("change", updateWordOption);
  $("task").addEventListener("change", updateWordOption);
  $("player").addEventListener("timeupdate", highlightPlaying);
  $("player").addEventListener("seeked", highlightPlaying);
  updateWordOption();
  loadServerInfo();
});
