// The station page: status every few seconds, results live over server-sent events, reviews with a login.
// No framework and no build step: this file is served as written.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const cameras = {};            // name -> {card, chart points, last inspection, frame loading state}
const STATUS_EVERY_MS = 2000;
let chartHours = 1;
const MIN_CHART_SPAN_S = 120;  // the narrowest the score chart gets, whatever the history
const GRID_STEPS_S = [10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400];
const FRAME_EVERY_MS = 400;    // at most this often per camera, whatever the line's rate
let lastStatus = null;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

// -- words and colours ---------------------------------------------------------------------------------

function verdictOf(item) {
  if (!item) return {cls: "none", word: "—"};
  if (item.label === "normal") return {cls: "ok", word: "OK"};
  if (item.kind === "lighting") return {cls: "warn", word: "LIGHTING"};
  if (item.kind === "blur") return {cls: "warn", word: "BLUR"};
  if (item.kind === "noise") return {cls: "warn", word: "NOISE"};
  if (item.kind === "compression") return {cls: "warn", word: "COMPRESSION"};
  return {cls: "bad", word: "DEFECT"};
}

const time = (epoch) => new Date(epoch * 1000).toLocaleTimeString("en-GB");
// An ISO 8601 time from the station (drift onsets) as the operator reads it: "14:03:22, 5 min ago".
const clock = (iso) => Number.isNaN(Date.parse(iso)) ? iso : `${time(Date.parse(iso) / 1000)}, ${ago(Date.parse(iso) / 1000)}`;
const dateTime = (epoch) => new Date(epoch * 1000).toLocaleString("sv-SE");  // 2026-11-30 05:41:39
function ago(epoch) {
  const seconds = Math.max(0, Date.now() / 1000 - epoch);
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}
function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}
const fixed = (value, digits = 2) => value == null ? "–" : Number(value).toFixed(digits);

// -- camera cards ------------------------------------------------------------------------------------------

function cameraCard(name) {
  const card = el("article", {class: "camera", "data-camera": name},
    el("header", {}, el("h2", {}, name), el("span", {class: "state"}), el("span", {class: "drift"}),
      el("span", {class: "retrain"})),
    el("div", {class: "verdict none", "data-inspection": ""},
      el("span", {class: "word"}, "—"), el("span", {class: "detail"}, "waiting for the first inspection")),
    el("img", {class: "live", alt: `latest frame of ${name}`}),
    el("dl", {class: "counters"}),
    el("canvas", {class: "chart"}),
    el("p", {class: "capture"}),
    el("p", {class: "bundle"}));
  $("#cameras").append(card);
  $(".live", card).addEventListener("click", () => {
    const last = cameras[name].last;
    if (last) openDetail(last.id);
  });
  $("#filters select[name=camera]").append(el("option", {value: name}, name));
  cameras[name] = {card, points: [], last: null, recent: new Map(), frameId: null, loading: false, pending: false,
                   loadedAt: 0};
  loadChart(name);
  getJSON(`/api/inspections?camera=${encodeURIComponent(name)}&limit=1`).then((data) => {
    if (data.inspections.length && !cameras[name].last) showInspection(data.inspections[0]);
  }).catch(console.warn);
  return cameras[name];
}

// The banner always describes the picture beside it: a result is shown once its frame has arrived (the frame is
// fetched at most every FRAME_EVERY_MS, so at a fast line some results only pass through the list and the chart).
function showInspection(item) {
  const camera = cameras[item.camera] || cameraCard(item.camera);
  camera.recent.set(item.id, item);
  if (camera.recent.size > 50) camera.recent.delete(camera.recent.keys().next().value);
  addChartPoint(item.camera, item.time, item.normalized_score, item.label === "anomalous");
  if (item.id === camera.frameId) showVerdict(item.camera, item); else requestFrame(item.camera);
}

function showVerdict(name, item) {
  const camera = cameras[name];
  camera.last = item;
  const verdict = verdictOf(item);
  const box = $(".verdict", camera.card);
  box.className = `verdict ${verdict.cls}`;
  box.dataset.inspection = item.id;
  $(".word", box).textContent = verdict.word;
  showAge(name);
}

function showAge(name) {
  const item = cameras[name].last;
  if (!item) return;
  const part = item.part_id ? ` · part ${item.part_id}` : "";
  $(".verdict .detail", cameras[name].card).textContent =
    `score ${fixed(item.normalized_score)} · ${ago(item.time)}${part}`;
}

function requestFrame(name) {
  const camera = cameras[name];
  if (camera.loading) { camera.pending = true; return; }
  camera.loading = true;
  setTimeout(() => loadFrame(name), Math.max(0, FRAME_EVERY_MS - (Date.now() - camera.loadedAt)));
}

async function loadFrame(name) {
  const camera = cameras[name];
  try {
    const response = await fetch(`/api/cameras/${encodeURIComponent(name)}/live.jpg`, {cache: "no-store"});
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      const image = $(".live", camera.card);
      if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
      image.src = url;
      camera.frameId = response.headers.get("X-Inspection");
      const item = camera.recent.get(camera.frameId);
      if (item) showVerdict(name, item);
    } else if (camera.recent.size) {  // no frame in memory (the station restarted): the verdict alone
      showVerdict(name, [...camera.recent.values()].pop());
    }
  } catch (error) { console.warn(error); }
  camera.loading = false;
  camera.loadedAt = Date.now();
  if (camera.pending) { camera.pending = false; requestFrame(name); }
}

function showCameraStatus(name, info, threshold) {
  const camera = cameras[name] || cameraCard(name);
  $(".state", camera.card).textContent = `${info.mode} · ${info.state}${info.error ? ": " + info.error : ""}`;
  if (info.state !== "ok" && !camera.last) {
    $(".verdict .word", camera.card).textContent = info.state.toUpperCase();
  }
  const latency = info.latency_ms || {};
  const counters = [["frames", info.frames], ["anomalies", info.anomalies], ["errors", info.errors],
                    ["latency p50/p95", `${fixed(latency.p50, 0)}/${fixed(latency.p95, 0)} ms`]];
  $(".counters", camera.card).replaceChildren(...counters.map(([label, value]) =>
    el("div", {}, el("dt", {}, label), el("dd", {class: label === "errors" && value ? "bad" : ""}, String(value ?? "–")))));
  const drift = $(".drift", camera.card);
  const driftState = info.drift ? info.drift.state : "off";
  if (driftState === "drift") {
    drift.className = "drift badge warn";
    drift.textContent = `DRIFT: ${info.drift.statistic ?? "?"}${info.drift.since ? " since " + clock(info.drift.since) : ""}`;
  } else if (driftState === "learning") {
    drift.className = "drift badge";
    drift.textContent = "drift: learning the reference";
  } else if (driftState === "ok") {
    drift.className = "drift badge ok";
    drift.textContent = "no drift";
  } else { drift.className = "drift"; drift.textContent = ""; }
  const capture = $(".capture", camera.card);
  capture.textContent = info.capture_warning ? `Camera differs from training: ${info.capture_warning}` : "";
  capture.className = info.capture_warning ? "capture warn" : "capture";
  const bundle = info.bundle || {}, signature = info.signature || {}, selfTest = bundle.self_test;
  const signed = signature.verified ? `signed by ${signature.key_id}, verified` :
                 signature.signed ? `signed by ${signature.key_id} (no trust list: not checked)` :
                 "unsigned (no trust list: unsigned bundles allowed)";
  const tested = selfTest ? (selfTest.passed === false ? "self-test FAILED" : "self-test passed") : "no self-test";
  $(".bundle", camera.card).replaceChildren("bundle ", el("b", {}, bundle.name || "?"),
    ` · ${(bundle.hash || "").slice(0, 12)} · ${signed} · ${tested} · threshold ${fixed(threshold, 3)}`);
  const normals = (info.reviewed || {}).normal || 0;
  const download = el("button", {type: "button", class: "download"},
                      `Download ${normals} reviewed normal${normals === 1 ? "" : "s"} for retraining`);
  download.addEventListener("click", () => downloadReviewed(name, "normal"));
  $(".retrain", camera.card).replaceChildren(...(normals ? [download] : []));
}

// -- score chart ---------------------------------------------------------------------------------------------

async function loadChart(name) {
  try {
    const data = await getJSON(`/api/scores?camera=${encodeURIComponent(name)}&hours=${chartHours}`);
    cameras[name].points = data.points;
    drawChart(name);
  } catch (error) { console.warn(error); }
}

function addChartPoint(name, at, score, anomalous) {
  const points = cameras[name].points, width = chartHours * 3600 / 360;
  const last = points[points.length - 1];
  if (last && at - last.time < width) {
    last.mean = (last.mean * last.count + score) / (last.count + 1);
    last.count += 1; last.max = Math.max(last.max, score); last.anomalies += anomalous ? 1 : 0;
  } else {
    points.push({time: at, max: score, mean: score, count: 1, anomalies: anomalous ? 1 : 0});
  }
  if (!cameras[name].drawPending) {  // one redraw per animation frame, however fast results come
    cameras[name].drawPending = true;
    requestAnimationFrame(() => { cameras[name].drawPending = false; drawChart(name); });
  }
}

function drawChart(name) {
  const canvas = $(".chart", cameras[name].card), context = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  context.setTransform(ratio, 0, 0, ratio, 0, 0);  // draw in CSS pixels: labels stay 12 px whatever the card's width
  const left = 28, bottom = 18, top = 8;
  // The chart covers the chosen hours, or less when the history is shorter (just after a start), so the
  // points spread over the width instead of crowding at its right edge.
  const now = Date.now() / 1000, all = cameras[name].points;
  const first = all.length ? all[0].time : now;
  const start = Math.max(now - chartHours * 3600, Math.min(first - 10, now - MIN_CHART_SPAN_S));
  const x = (t) => left + (t - start) / (now - start) * (w - left - 4);
  const y = (s) => top + (1 - Math.min(Math.max(s, 0), 1)) * (h - top - bottom);
  context.clearRect(0, 0, w, h);
  context.font = "12px system-ui"; context.fillStyle = "#9aa3ad"; context.strokeStyle = "#333a42";
  for (const s of [0, 0.5, 1]) { context.fillText(s.toFixed(1), 4, y(s) + 4); }
  // grid lines on round clock times, at most about six of them
  const step = GRID_STEPS_S.find((seconds) => (now - start) / seconds <= 6) || GRID_STEPS_S[GRID_STEPS_S.length - 1];
  for (let t = Math.ceil(start / step) * step; t <= now; t += step) {
    context.beginPath(); context.moveTo(x(t), top); context.lineTo(x(t), h - bottom); context.stroke();
    const label = new Date(t * 1000).toLocaleTimeString("en-GB", step < 60 ? {} : {hour: "2-digit", minute: "2-digit"});
    context.fillText(label, x(t) - context.measureText(label).width / 2, h - 4);
  }
  context.strokeStyle = "#d62d2d"; context.setLineDash([6, 4]); context.lineWidth = 1.5;
  context.beginPath(); context.moveTo(left, y(0.5)); context.lineTo(w - 4, y(0.5)); context.stroke();
  context.setLineDash([]); context.fillStyle = "#ff8080"; context.fillText("threshold", left + 4, y(0.5) - 4);
  const points = cameras[name].points.filter((p) => p.time >= start);
  context.fillStyle = "rgba(120, 170, 255, 0.35)";
  for (const p of points) context.fillRect(x(p.time) - 1, y(p.max), 2, y(p.mean) - y(p.max) + 1);
  context.strokeStyle = "#78aaff"; context.lineWidth = 1.5; context.beginPath();
  points.forEach((p, i) => i ? context.lineTo(x(p.time), y(p.mean)) : context.moveTo(x(p.time), y(p.mean)));
  context.stroke();
  context.fillStyle = "#ff5252";
  for (const p of points) if (p.anomalies) { context.beginPath(); context.arc(x(p.time), y(p.max), 3, 0, 7); context.fill(); }
}

// -- status --------------------------------------------------------------------------------------------------

async function refreshStatus() {
  if (document.hidden) return;
  try {
    const status = await getJSON("/api/status");
    lastStatus = status;
    document.title = `${status.station} · edge-anomaly`;
    $("#station").textContent = status.station;
    $("#version").textContent = `edge-anomaly ${status.version}`;
    const health = $("#health");
    health.className = `pill ${status.healthy ? "ok" : "bad"}`;
    health.textContent = status.healthy ? "RUNNING" : `PROBLEM (${status.problems.length})`;
    const broker = $("#broker");
    broker.className = `pill ${status.mqtt.connected ? "ok" : "bad"}`;
    broker.textContent = status.mqtt.connected ? "broker connected" : "broker NOT connected";
    $("#outbox").textContent = `outbox ${status.outbox.pending} waiting` +
      (status.outbox.dropped_results ? `, ${status.outbox.dropped_results} dropped` : "");
    const evidence = status.evidence;
    $("#disk").textContent = evidence.save === "none" ? "no evidence kept" :
      `evidence ${bytes(evidence.bytes)} / ${bytes(evidence.max_bytes)} · ${bytes(evidence.disk_free_bytes)} free`;
    const problems = $("#problems");
    problems.hidden = !status.problems.length;
    problems.replaceChildren(...status.problems.map((p) => el("li", {}, p)));
    for (const [name, info] of Object.entries(status.cameras)) showCameraStatus(name, info, info.threshold);
    $("#signin").disabled = !status.review.enabled;
    if (!status.review.enabled) $("#signin").title = "reviews are off: the station config names no http.token or http.users";
  } catch (error) {
    $("#health").className = "pill bad"; $("#health").textContent = "station not reachable";
  }
}

// -- results list --------------------------------------------------------------------------------------------

function filters() {
  const form = new FormData($("#filters"));
  const query = new URLSearchParams();
  for (const key of ["camera", "verdict", "kind", "reviewed"]) if (form.get(key)) query.set(key, form.get(key));
  if (form.get("since")) query.set("since", String(Date.now() / 1000 - Number(form.get("since"))));
  return {query, form};
}

function matches(item, form) {
  return (!form.get("camera") || form.get("camera") === item.camera) &&
         (!form.get("verdict") || form.get("verdict") === item.label) &&
         (!form.get("kind") || form.get("kind") === item.kind) && form.get("reviewed") !== "yes";
}

function row(item) {
  const verdict = verdictOf(item);
  const thumbnail = item.overlay || (item.links && item.links.thumbnail)
    ? el("img", {src: `/api/inspections/${item.id}/thumb.jpg`, alt: "", loading: "lazy"})
    : el("div", {class: "nothumb", title: "no picture kept (evidence.save: all keeps every frame's)"}, "no picture");
  const source = item.source || "";
  const tr = el("tr", {"data-id": item.id},
    el("td", {}, thumbnail), el("td", {}, time(item.time)), el("td", {}, item.camera),
    el("td", {class: "source", title: source}, source.split("/").pop()),
    el("td", {}, item.part_id || ""), el("td", {}, el("span", {class: `tag ${verdict.cls}`}, verdict.word)),
    el("td", {}, item.kind || ""), el("td", {}, fixed(item.normalized_score)),
    el("td", {class: "reviewed"}, item.review ? (item.review === "normal" ? "✔ normal" : "✖ defect") : ""));
  tr.addEventListener("click", () => openDetail(item.id));
  return tr;
}

async function loadList() {
  const {query} = filters();
  query.set("limit", "50");
  try {
    const data = await getJSON(`/api/inspections?${query}`);
    $("#list tbody").replaceChildren(...data.inspections.map(row));
    $("#empty").hidden = data.inspections.length > 0;
  } catch (error) { console.warn(error); }
}

function prependLive(item) {
  const {form} = filters();
  if (!form.get("live") || !matches(item, form)) return;
  const body = $("#list tbody");
  body.prepend(row(item));
  while (body.rows.length > 50) body.deleteRow(-1);
  $("#empty").hidden = true;
}

// -- detail and review ---------------------------------------------------------------------------------------

let current = null;

async function openDetail(id) {
  let item;
  try { item = await getJSON(`/api/inspections/${encodeURIComponent(id)}`); }
  catch (error) { alert("This inspection is not in the station's history (yet)."); return; }
  current = item;
  const verdict = verdictOf(item);
  $("#d-title").replaceChildren(el("span", {class: `tag ${verdict.cls}`}, verdict.word),
                                ` ${item.camera} · ${dateTime(item.time)}`);
  const live = cameras[item.camera] && cameras[item.camera].last && cameras[item.camera].last.id === item.id;
  const frame = item.links.frame;
  const overlay = item.links.overlay || (live && cameras[item.camera].frameId === item.id ? $(".live", cameras[item.camera].card).src : null);
  $("#d-frame").src = frame || ""; $("#d-frame").parentElement.hidden = !frame;
  $("#d-overlay").src = overlay || ""; $("#d-overlay").parentElement.hidden = !overlay;
  $("#d-nopicture").hidden = Boolean(frame || overlay);
  const facts = [["part", item.part_id || "–"], ["source", item.source], ["station verdict", `${item.label}${item.kind ? " (" + item.kind + ")" : ""}`],
    ["score (threshold)", `${fixed(item.score, 4)} (${fixed(item.threshold, 4)})`],
    ["normalised score", `${fixed(item.normalized_score, 3)} (threshold 0.5)`], ["confidence", fixed(item.confidence, 3)],
    ["kind scores", Object.entries(item.kind_scores).map(([k, v]) => `${k} ${fixed(v, 3)}`).join(", ") || "–"],
    ["regions (x, y, w, h)", item.regions.map((r) => `(${r.join(", ")})`).join(" ") || "none"],
    ["latency", `${fixed(item.latency_ms, 1)} ms (inference ${fixed(item.inference_ms, 1)} ms)`],
    ["bundle", `${item.bundle_name} · ${item.bundle_hash.slice(0, 12)}`], ["inspection id", item.id]];
  $("#d-facts tbody").replaceChildren(...facts.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  $("#d-reviews").replaceChildren(...(item.reviews.length ? item.reviews.map((r) =>
    el("li", {}, `${r.verdict === "normal" ? "✔ normal" : "✖ defect"} by ${r.reviewer}, ${dateTime(r.time)}` +
      (r.note ? ` — ${r.note}` : "") + (r.copy ? "" : " (no frame kept)"))) : [el("li", {class: "muted"}, "not reviewed yet")]));
  $("#d-message").textContent = "";
  if (!$("#detail").open) $("#detail").showModal();
}

function credentials() { return sessionStorage.getItem("authorization"); }

async function review(verdict) {
  if (!credentials()) { openLogin(); return; }
  const response = await fetch(`/api/inspections/${encodeURIComponent(current.id)}/review`, {
    method: "POST", headers: {"Content-Type": "application/json", "Authorization": credentials()},
    body: JSON.stringify({verdict, note: $("#d-note").value || null, reviewer: sessionStorage.getItem("reviewer")})});
  const answer = await response.json().catch(() => ({}));
  if (response.status === 401) { sessionStorage.removeItem("authorization"); showWho(); openLogin(); return; }
  if (!response.ok) { $("#d-message").textContent = answer.error || `refused (${response.status})`; return; }
  $("#d-note").value = "";
  await openDetail(current.id);
  $("#d-message").textContent = `Saved: ${verdict === "normal" ? "this was normal" : "confirmed defect"}` +
    (answer.copy ? " · frame filed for retraining" : "");
}

async function downloadReviewed(camera, verdict) {
  // A tar for `edge-anomaly update MODEL --add DIR` on the workstation: the station itself has no torch to retrain.
  if (!credentials()) { openLogin(); return; }
  const response = await fetch(`/api/reviewed/${encodeURIComponent(camera)}/${verdict}.tar`,
                               {headers: {"Authorization": credentials()}});
  if (response.status === 401) { sessionStorage.removeItem("authorization"); showWho(); openLogin(); return; }
  if (!response.ok) { alert((await response.json().catch(() => ({}))).error || `refused (${response.status})`); return; }
  const link = el("a", {href: URL.createObjectURL(await response.blob()), download: `${camera}-reviewed-${verdict}.tar`});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function openLogin() {
  const methods = lastStatus ? lastStatus.review.methods : [];
  $("#login-methods").textContent = `This station accepts: ${methods.join(" or ") || "nothing (reviews are off)"}.`;
  $("#login-message").textContent = "";
  $("#login").showModal();
}

function showWho() {
  const who = sessionStorage.getItem("reviewer");
  $("#who").textContent = credentials() ? `reviewing as ${who || "token holder"}` : "";
  $("#signin").textContent = credentials() ? "Sign out" : "Sign in to review";
}

function setupLogin() {
  $("#signin").addEventListener("click", () => {
    if (credentials()) { sessionStorage.clear(); showWho(); } else openLogin();
  });
  $("#login").addEventListener("close", () => {
    if ($("#login").returnValue !== "ok") return;
    const form = new FormData($("#login-form"));
    if (form.get("token")) sessionStorage.setItem("authorization", `Bearer ${form.get("token")}`);
    else if (form.get("user")) {
      const pair = new TextEncoder().encode(`${form.get("user")}:${form.get("password")}`);
      sessionStorage.setItem("authorization", `Basic ${btoa(String.fromCharCode(...pair))}`);
    }
    sessionStorage.setItem("reviewer", form.get("name") || form.get("user") || "");
    $("#login-form").reset();
    showWho();
  });
  $("#d-normal").addEventListener("click", () => review("normal"));
  $("#d-defect").addEventListener("click", () => review("defect"));
  showWho();
}

// -- live events ---------------------------------------------------------------------------------------------

function listen() {
  const events = new EventSource("/events");
  events.addEventListener("inspection", (message) => {
    const item = JSON.parse(message.data);
    showInspection(item);
    prependLive(item);
  });
  events.addEventListener("review", (message) => {
    const item = JSON.parse(message.data);
    const cell = $(`#list tr[data-id="${item.id}"] .reviewed`);
    if (cell) cell.textContent = item.verdict === "normal" ? "✔ normal" : "✖ defect";
  });
}

async function start() {
  setupLogin();
  $("#filters").addEventListener("change", loadList);
  $("#hours").addEventListener("change", () => {
    chartHours = Number($("#hours").value);
    Object.keys(cameras).forEach(loadChart);
  });
  await refreshStatus();
  listen();
  loadList();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(() => Object.keys(cameras).forEach(showAge), 1000);
  setInterval(() => Object.keys(cameras).forEach(loadChart), 60000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshStatus(); });
  window.addEventListener("resize", () => Object.keys(cameras).forEach(drawChart));
}

start();
