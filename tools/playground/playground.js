// The playground page of tools/fn serve: lists the functions and calls them through the dashboard API, as CVAT
// does (POST /api/function_invocations with x-nuclio-function-name), then draws what they answer.
// Plain JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
  "#469990", "#800000", "#808000", "#000075"];
const DRAG_PIXELS = 6; // a press that moves less than this (on screen) is a click

const page = { functions: [], current: null, view: null, calls: 0 };

// ---------------------------------------------------------------- helpers

function colorOf(text) {
  let hash = 0;
  for (const ch of String(text)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function element(tag, attributes = {}, text = null) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

const round = (value) => Math.round(value * 100) / 100;

// JSON with arrays of numbers on one line and long ones cut short (masks hold thousands of numbers)
function pretty(value, indent = "") {
  if (Array.isArray(value)) {
    if (value.length && value.every((v) => typeof v === "number")) {
      const shown = value.slice(0, 40).join(", ");
      return `[${shown}${value.length > 40 ? `, … (${value.length} numbers)` : ""}]`;
    }
    if (!value.length) return "[]";
    const inner = indent + "  ";
    return `[\n${value.map((v) => inner + pretty(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    const inner = indent + "  ";
    return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${pretty(value[k], inner)}`).join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value);
}

function formatBytes(n) {
  if (n < 1024) return `${Math.round(n)} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

// ---------------------------------------------------------------- the API

async function invoke(name, body) {
  const started = performance.now();
  let response;
  try {
    response = await fetch("/api/function_invocations", {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", "x-nuclio-function-name": name, "x-nuclio-path": "/" },
    });
  } catch (error) {
    return { status: 0, ok: false, json: null, text: `the server did not answer (${error.message})`,
      ms: performance.now() - started, headers: new Headers() };
  }
  const text = await response.text();
  const ms = performance.now() - started;
  let json = null;
  try { json = JSON.parse(text); } catch (error) { json = null; }
  return { status: response.status, ok: response.ok, json, text, ms, headers: response.headers };
}

// shows a call's reply, its status and latency, and the function's own error when it failed
function report(result, summary = "") {
  $("reply").textContent = result.json !== null ? pretty(result.json) : result.text;
  const error = $("call-error");
  if (result.ok) {
    error.hidden = true;
    error.textContent = "";
  } else {
    error.hidden = false;
    const message = result.json && typeof result.json.error === "string" ? result.json.error : result.text;
    error.textContent = `${result.status || "no answer"}: ${message}`;
  }
  $("call-status").textContent = `${result.status || "—"} in ${Math.round(result.ms)} ms${summary ? ` · ${summary}` : ""}`;
  $("call-status").dataset.ms = String(Math.round(result.ms));
  $("call-status").dataset.status = String(result.status);
  $("call-status").dataset.calls = String(++page.calls); // replies shown so far (the tests wait on it)
}

function busy(text) {
  $("call-status").textContent = text;
  $("call-status").dataset.status = "";
}

// ---------------------------------------------------------------- images

function imageFromUrl(url, name) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ name, url, base64: url.slice(url.indexOf(",") + 1), width: img.naturalWidth,
      height: img.naturalHeight });
    img.onerror = () => reject(new Error(`${name} is not an image this browser can show`));
    img.src = url;
  });
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => imageFromUrl(reader.result, file.name).then(resolve, reject);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function once(target, event) {
  return new Promise((resolve, reject) => {
    target.addEventListener(event, resolve, { once: true });
    target.addEventListener("error", () => reject(new Error("this browser cannot play the video")), { once: true });
  });
}

// frames of a short video, as JPEG images, ``fps`` per second and at most ``limit``
async function videoFrames(file, fps = 5, limit = 100) {
  const video = element("video", { muted: "", preload: "auto" });
  video.src = URL.createObjectURL(file);
  await once(video, "loadeddata");
  const canvas = element("canvas", { width: video.videoWidth, height: video.videoHeight });
  const context = canvas.getContext("2d");
  const count = Math.min(limit, Math.floor(video.duration * fps) + 1);
  const frames = [];
  for (let i = 0; i < count; i++) {
    video.currentTime = i / fps;
    await once(video, "seeked");
    context.drawImage(video, 0, 0);
    frames.push(await imageFromUrl(canvas.toDataURL("image/jpeg", 0.92), `${file.name} @ ${(i / fps).toFixed(1)} s`));
  }
  URL.revokeObjectURL(video.src);
  return frames;
}

// ---------------------------------------------------------------- masks

// a coloured image of a mask: ``ones(i)`` says whether pixel i of the w x h box is set
function maskImage(width, height, color, fill) {
  const canvas = element("canvas", { width, height });
  const context = canvas.getContext("2d");
  const data = context.createImageData(width, height);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  fill((i) => { data.data.set([r, g, b, 140], i * 4); });
  context.putImageData(data, 0, 0);
  return canvas.toDataURL("image/png");
}

// CVAT's RLE (alternating runs of 0 and 1 over the box's pixels, starting with 0) + [xtl, ytl, xbr, ybr]
function rleMask(points, color) {
  const [xtl, ytl, xbr, ybr] = points.slice(-4);
  const width = xbr - xtl + 1, height = ybr - ytl + 1;
  const url = maskImage(width, height, color, (set) => {
    let at = 0;
    points.slice(0, -4).forEach((run, k) => {
      if (k % 2 === 1) for (let i = at; i < at + run; i++) set(i);
      at += run;
    });
  });
  return { url, x: xtl, y: ytl, width, height };
}

// a detector's mask: the box's pixels (0/255) + [xtl, ytl, xbr, ybr]
function pixelMask(values, color) {
  const [xtl, ytl, xbr, ybr] = values.slice(-4);
  const width = xbr - xtl + 1, height = ybr - ytl + 1;
  const url = maskImage(width, height, color, (set) => {
    for (let i = 0; i < width * height; i++) if (values[i]) set(i);
  });
  return { url, x: xtl, y: ytl, width, height };
}

// a polygon drawn on the page as a mask in CVAT's RLE (what a tracker takes for a mask)
function polygonToRle(points, width, height) {
  const canvas = element("canvas", { width, height });
  const context = canvas.getContext("2d");
  context.beginPath();
  for (let i = 0; i < points.length; i += 2) context.lineTo(points[i], points[i + 1]);
  context.closePath();
  context.fill();
  const alpha = context.getImageData(0, 0, width, height).data;
  let [xtl, ytl, xbr, ybr] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
    if (alpha[(y * width + x) * 4 + 3] >= 128) {
      xtl = Math.min(xtl, x); ytl = Math.min(ytl, y); xbr = Math.max(xbr, x); ybr = Math.max(ybr, y);
    }
  }
  if (xbr < 0) return null;
  const counts = [];
  let value = 0, run = 0;
  for (let y = ytl; y <= ybr; y++) for (let x = xtl; x <= xbr; x++) {
    const bit = alpha[(y * width + x) * 4 + 3] >= 128 ? 1 : 0;
    if (bit !== value) { counts.push(run); run = 0; value = bit; }
    run++;
  }
  counts.push(run);
  return [...counts, xtl, ytl, xbr, ybr];
}

// ---------------------------------------------------------------- a stage: an image with an SVG over it

class Stage {
  constructor(node, onFiles) {
    this.node = node;
    this.image = null;
    this.handlers = null; // {onClick(point, event), onBox([x1, y1, x2, y2])} of the view using the stage
    this.press = null;
    node.addEventListener("dragover", (event) => { event.preventDefault(); node.classList.add("dragover"); });
    node.addEventListener("dragleave", () => node.classList.remove("dragover"));
    node.addEventListener("drop", (event) => {
      event.preventDefault();
      node.classList.remove("dragover");
      if (event.dataTransfer.files.length) onFiles([...event.dataTransfer.files]);
    });
    window.addEventListener("mouseup", (event) => this.release(event));
  }

  show(image) {
    this.image = image;
    this.node.replaceChildren();
    this.node.classList.add("has-image");
    this.node.append(element("img", { src: image.url, alt: image.name, draggable: "false" }));
    this.svg = element("svg:svg", { viewBox: `0 0 ${image.width} ${image.height}`, preserveAspectRatio: "none",
      "aria-label": `shapes on ${image.name}`, role: "img" });
    this.shapes = element("svg:g", { class: "shapes" });
    this.drafts = element("svg:g", { class: "drafts" });
    this.svg.append(this.shapes, this.drafts);
    this.node.append(this.svg);
    this.svg.addEventListener("mousemove", (event) => { tooltip(event); this.move(event); });
    this.svg.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    this.svg.addEventListener("contextmenu", (event) => event.preventDefault());
    this.svg.addEventListener("mousedown", (event) => {
      if (this.handlers) this.press = { start: this.pixel(event), screen: [event.clientX, event.clientY], draft: null };
    });
  }

  reset(hint) {
    this.image = null;
    this.handlers = null;
    this.node.classList.remove("has-image");
    this.node.replaceChildren(element("p", { class: "hint" }, hint));
  }

  clear() {
    if (this.image) { this.shapes.replaceChildren(); this.drafts.replaceChildren(); }
  }

  // the image pixel under a mouse event
  pixel(event) {
    const box = this.svg.getBoundingClientRect();
    const x = (event.clientX - box.left) * this.image.width / box.width;
    const y = (event.clientY - box.top) * this.image.height / box.height;
    return [Math.min(Math.max(x, 0), this.image.width - 1), Math.min(Math.max(y, 0), this.image.height - 1)];
  }

  // a marker radius and a font size (image pixels) that stay legible whatever the image size
  get radius() { return Math.max(3, Math.round(Math.max(this.image.width, this.image.height) / 150)); }
  get fontSize() { return Math.max(10, Math.round(Math.max(this.image.width, this.image.height) / 45)); }

  move(event) {
    const press = this.press;
    if (!press || !this.handlers.onBox) return;
    const [x, y] = this.pixel(event);
    if (!press.draft) { press.draft = element("svg:rect", { class: "draft" }); this.drafts.append(press.draft); }
    press.draft.setAttribute("x", Math.min(press.start[0], x)); press.draft.setAttribute("y", Math.min(press.start[1], y));
    press.draft.setAttribute("width", Math.abs(x - press.start[0]));
    press.draft.setAttribute("height", Math.abs(y - press.start[1]));
  }

  // the end of a press: a click (onClick) or, when the mouse moved, a box (onBox)
  release(event) {
    const press = this.press;
    if (!press || !this.handlers) return;
    this.press = null;
    if (press.draft) press.draft.remove();
    const end = this.pixel(event);
    const moved = Math.hypot(event.clientX - press.screen[0], event.clientY - press.screen[1]);
    if (moved >= DRAG_PIXELS && this.handlers.onBox) {
      const from = press.start;
      this.handlers.onBox([Math.min(from[0], end[0]), Math.min(from[1], end[1]), Math.max(from[0], end[0]),
        Math.max(from[1], end[1])].map(round));
    } else if (moved < DRAG_PIXELS && this.handlers.onClick) {
      this.handlers.onClick(press.start.map(round), event);
    }
  }
}

function tooltip(event) {
  const target = event.target.closest("[data-tip]");
  const tip = $("tooltip");
  if (!target) { tip.hidden = true; return; }
  const box = tip.parentElement.getBoundingClientRect();
  tip.textContent = target.dataset.tip;
  tip.hidden = false;
  tip.style.left = `${event.clientX - box.left + 14}px`;
  tip.style.top = `${event.clientY - box.top + 14}px`;
}

// ---------------------------------------------------------------- drawing replies

function attributeOf(shape, name) {
  const found = (shape.attributes || []).find((a) => a.name === name);
  return found ? found.value : null;
}

// one shape of a reply on ``stage``: an SVG group carrying the reply's coordinates and a tooltip
function drawShape(stage, shape, index, name = shape.label, color = colorOf(shape.label || index), caption = true) {
  const score = shape.confidence !== undefined ? Number(shape.confidence) : null;
  const text = attributeOf(shape, "text");
  const tip = [name || shape.type, score !== null ? score.toFixed(3) : null, text !== null ? `“${text}”` : null]
    .filter((part) => part !== null && part !== undefined).join(" · ");
  const group = element("svg:g", { class: "shape-group", "data-index": index, "data-type": shape.type,
    "data-label": name || "", "data-tip": tip, stroke: color, fill: color });
  group.append(element("svg:title", {}, tip));
  const points = shape.points || [];
  let anchor = [points[0], points[1]];
  if (shape.type === "rectangle") {
    const [x1, y1, x2, y2] = points;
    group.append(element("svg:rect", { class: "shape", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
  } else if (shape.type === "polygon" || shape.type === "polyline") {
    group.append(element(`svg:${shape.type}`, { class: "shape", points: pairs(points) }));
  } else if (shape.type === "points") {
    for (let i = 0; i < points.length; i += 2) {
      group.append(element("svg:circle", { class: "shape", cx: points[i], cy: points[i + 1], r: stage.radius }));
    }
  } else if (shape.type === "skeleton") {
    // the edges the spec's skeleton drawing joins, between the points that are visible
    const visible = new Map((shape.elements || []).filter((p) => !p.outside).map((p) => [p.label, p.points]));
    const spec = page.current ? page.current.labels.find((l) => l.name === shape.label) : null;
    for (const [from, to] of (spec && spec.edges) || []) {
      if (!visible.has(from) || !visible.has(to)) continue;
      const [[x1, y1], [x2, y2]] = [visible.get(from), visible.get(to)];
      group.append(element("svg:line", { class: "edge", x1, y1, x2, y2, "data-from": from, "data-to": to,
        "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
    }
    for (const part of shape.elements || []) {
      if (part.outside) continue;
      const [x, y] = part.points;
      const dot = element("svg:circle", { class: "shape keypoint", cx: x, cy: y, r: stage.radius,
        "data-label": part.label, "data-tip": `${name} · ${part.label}` });
      dot.append(element("svg:title", {}, part.label));
      group.append(dot, element("svg:text", { x: x + stage.radius + 2, y: y + stage.fontSize / 3,
        "font-size": stage.fontSize * 0.7, class: "keypoint-name" }, part.label));
      anchor = anchor[0] === undefined ? [x, y] : anchor;
    }
  } else if (shape.type === "mask") {
    const mask = shape.mask ? pixelMask(shape.mask, color) : rleMask(points, color);
    group.append(element("svg:image", { class: "shape mask", href: mask.url, x: mask.x, y: mask.y,
      width: mask.width, height: mask.height, preserveAspectRatio: "none" }));
    if (shape.mask && points.length >= 6) {
      group.append(element("svg:polygon", { class: "shape outline", points: pairs(points), "fill-opacity": 0 }));
    }
    anchor = [mask.x, mask.y];
  }
  const size = stage.fontSize;
  if (anchor[0] !== undefined && (text !== null || (caption && shape.type !== "skeleton"))) {
    // the recognised text, else the label and score, above the shape's first point
    group.append(element("svg:text", { x: anchor[0], y: Math.max(size, anchor[1] - size / 4), "font-size": size,
      class: text !== null ? "recognised" : "caption" }, text !== null ? text : tip));
  }
  stage.shapes.append(group);
  return group;
}

const pairs = (flat) => {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push(`${flat[i]},${flat[i + 1]}`);
  return out.join(" ");
};

// the reply's shapes in the list beside the image; focusing an entry highlights its shape
function listShapes(entries) {
  const list = $("results");
  list.replaceChildren();
  for (const { text, group } of entries) {
    const item = element("li", { tabindex: "0" }, text);
    const on = () => group && group.querySelectorAll(".shape").forEach((s) => s.classList.add("focused"));
    const off = () => group && group.querySelectorAll(".shape").forEach((s) => s.classList.remove("focused"));
    item.addEventListener("focus", on); item.addEventListener("blur", off);
    item.addEventListener("mouseenter", on); item.addEventListener("mouseleave", off);
    list.append(item);
  }
}

function marker(stage, [x, y], positive) {
  const r = stage.radius * 1.6;
  const group = element("svg:g", { class: positive ? "click positive" : "click negative",
    "data-tip": `${positive ? "positive" : "negative"} click (${x}, ${y})` });
  group.append(element("svg:circle", { cx: x, cy: y, r, fill: positive ? "#1a7f37" : "#b42318", stroke: "#fff",
    "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  group.append(element("svg:text", { x: x - r / 2, y: y + r / 2, fill: "#fff", stroke: "none",
    "font-size": r * 1.6 }, positive ? "+" : "−"));
  stage.drafts.append(group);
}

// ---------------------------------------------------------------- views, one per kind

const stage0 = new Stage($("stage0"), (files) => page.view && page.view.files(files, 0));
const stage1 = new Stage($("stage1"), (files) => page.view && page.view.files(files, 1));

function onFile(id, handler) {
  $(id).addEventListener("change", (event) => {
    const files = [...event.target.files];
    if (files.length) handler(files);
  });
}

async function loaded(files, stage) {
  try {
    const image = await readImage(files[0]);
    stage.show(image);
    return image;
  } catch (error) {
    report({ ok: false, status: 0, json: null, text: error.message, ms: 0 });
    return null;
  }
}

const detector = {
  image: null,
  enter(fn) {
    const open = fn.open_vocabulary;
    $("det-prompts-field").hidden = !open;
    const select = $("det-labels");
    select.replaceChildren(...fn.labels.map((l) => element("option", { value: l.name }, l.name)));
    if (this.image) stage0.show(this.image);
  },
  async files(files) {
    this.image = await loaded(files, stage0);
    if (this.image) this.run();
  },
  body() {
    const body = { image: this.image.base64, threshold: Number($("det-threshold").value) };
    const labels = [...$("det-labels").selectedOptions].map((o) => o.value);
    const prompts = $("det-prompts").value.split(",").map((p) => p.trim()).filter(Boolean);
    if (page.current.open_vocabulary && prompts.length) body.prompts = prompts;
    else if (labels.length) body.labels = labels;
    return body;
  },
  async run() {
    if (!this.image) { stage0.node.focus(); busy("Pick an image first"); return; }
    busy("Detecting…");
    const result = await invoke(page.current.name, this.body());
    stage0.clear();
    const shapes = result.ok && Array.isArray(result.json) ? result.json : [];
    const entries = shapes.map((shape, i) => {
      const group = drawShape(stage0, shape, i);
      const score = shape.confidence !== undefined ? ` ${Number(shape.confidence).toFixed(3)}` : "";
      const text = attributeOf(shape, "text");
      return { text: `${shape.label}${score} (${shape.type})${text !== null ? `: “${text}”` : ""}`, group };
    });
    listShapes(entries);
    report(result, result.ok ? `${shapes.length} shape${shapes.length === 1 ? "" : "s"}` : "");
  },
};

const interactor = {
  image: null, pos: [], neg: [], box: null, history: [], calls: 0, running: false, again: false,
  enter() {
    this.bind();
    if (this.image) { stage0.show(this.image); this.redraw(); }
  },
  async files(files) {
    this.image = await loaded(files, stage0);
    Object.assign(this, { pos: [], neg: [], box: null, history: [], calls: 0 });
    $("int-log").replaceChildren();
    this.bind();
  },
  bind() {
    stage0.handlers = {
      onClick: (point, event) => this.add(point, !(event.shiftKey || event.button === 2)),
      onBox: (box) => { this.box = box; this.history.push("box"); this.changed(); },
    };
  },
  add(point, positive) {
    (positive ? this.pos : this.neg).push(point);
    this.history.push(positive ? "pos" : "neg");
    this.changed();
  },
  undo() {
    const last = this.history.pop();
    if (last === "pos") this.pos.pop();
    else if (last === "neg") this.neg.pop();
    else if (last === "box") this.box = null;
    this.changed();
  },
  clear() {
    Object.assign(this, { pos: [], neg: [], box: null, history: [] });
    this.changed();
  },
  redraw(reply = null) {
    stage0.clear();
    if (this.box) {
      const [x1, y1, x2, y2] = this.box;
      stage0.drafts.append(element("svg:rect", { class: "draft box", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    }
    this.pos.forEach((p) => marker(stage0, p, true));
    this.neg.forEach((p) => marker(stage0, p, false));
    const shapes = reply && Array.isArray(reply.shapes) ? reply.shapes : [];
    listShapes(shapes.map((shape, i) => ({ text: `mask ${i + 1}${shape.attributes ? ` (score ${shape.attributes[0].value})` : ""}`,
      group: drawShape(stage0, shape, i, "mask", "#0a58ca", false) })));
  },
  async changed() {
    this.redraw();
    if (!this.pos.length && !this.box) { listShapes([]); return; }
    if (this.running) { this.again = true; return; }
    this.running = true;
    busy("Segmenting…");
    const body = { image: this.image.base64, pos_points: this.pos, neg_points: this.neg,
      obj_bbox: this.box ? [this.box.slice(0, 2), this.box.slice(2)] : [] };
    const result = await invoke(page.current.name, body);
    this.running = false;
    if (this.again) { this.again = false; this.changed(); return; }
    this.redraw(result.ok ? result.json : null);
    const cache = result.headers.get("X-Embedding-Cache");
    this.calls += 1;
    const line = `call ${this.calls}: ${this.pos.length} positive, ${this.neg.length} negative${this.box ? ", a box" : ""}` +
      ` → ${result.status}${cache ? `, embedding ${cache}` : ""}, ${Math.round(result.ms)} ms`;
    const item = element("li", { "data-cache": cache || "", "data-ms": String(Math.round(result.ms)) }, line);
    $("int-log").append(item);
    item.scrollIntoView({ block: "nearest" });
    report(result, cache ? `embedding cache ${cache}` : "");
  },
};

const tracker = {
  frames: [], objects: [], outline: [], states: null, results: [], at: 0, playing: false,
  enter(fn) {
    const types = fn.shape_types.length ? fn.shape_types : ["rectangle"];
    $("trk-type").replaceChildren(...types.map((t) => element("option", { value: t }, t)));
    this.bind();
    if (this.frames.length) this.show(this.at);
  },
  bind() {
    stage0.handlers = {
      onClick: (point) => {
        if (this.at !== 0 || this.states || this.type() === "rectangle") return;
        this.outline.push(...point);
        this.show(0);
      },
      onBox: (box) => { if (this.at === 0 && !this.states) this.addBox(box); },
    };
  },
  async files(files) {
    let frames = [];
    try {
      const videos = files.filter((f) => f.type.startsWith("video/"));
      if (videos.length) frames = await videoFrames(videos[0]);
      else {
        files.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
        frames = await Promise.all(files.map(readImage));
      }
    } catch (error) {
      report({ ok: false, status: 0, json: null, text: error.message, ms: 0 });
      return;
    }
    Object.assign(this, { frames, objects: [], outline: [], states: null, results: [], at: 0 });
    $("trk-frame").max = String(frames.length - 1);
    this.bind();
    this.show(0);
  },
  type() { return $("trk-type").value; },
  addBox([x1, y1, x2, y2]) {
    const type = this.type();
    if (type === "rectangle") this.objects.push({ type, points: [x1, y1, x2, y2] });
    else this.addOutline([x1, y1, x2, y1, x2, y2, x1, y2]);
    this.show(0);
  },
  addOutline(points) {
    const type = this.type();
    if (points.length < 6) { busy("An outline needs at least 3 points"); return; }
    if (type === "polygon") this.objects.push({ type, points });
    else {
      const rle = polygonToRle(points, this.frames[0].width, this.frames[0].height);
      if (rle) this.objects.push({ type: "mask", points: rle });
    }
    this.outline = [];
    this.show(0);
  },
  show(index) {
    this.at = index;
    const frame = this.frames[index];
    if (!frame) return;
    stage0.show(frame);
    $("trk-frame").value = String(index);
    $("trk-frame-value").textContent = `${index + 1} / ${this.frames.length}`;
    const result = this.results[index];
    if (index === 0 && !result) {
      this.objects.forEach((o, i) => drawShape(stage0, o, i, `object ${i + 1}`, PALETTE[i % PALETTE.length]));
      if (this.outline.length) {
        stage0.drafts.append(element("svg:polyline", { class: "draft", points: pairs(this.outline) }));
      }
      listShapes(this.objects.map((o, i) => ({ text: `object ${i + 1}: ${o.type} (to track)` })));
    }
    if (result) {
      const entries = result.shapes.map((shape, i) => ({
        text: `object ${i + 1}: ${shape.type}`,
        group: drawShape(stage0, shape, i, `object ${i + 1}`, PALETTE[i % PALETTE.length]),
      }));
      listShapes(entries);
      const objects = Math.max(1, result.shapes.length);
      const perObject = result.bytes !== null ? `${formatBytes(result.bytes / objects)} of state per object stored on the server this step` : "";
      const token = result.states.length ? `, ${formatBytes(JSON.stringify(result.states).length / objects)} per object in the reply` : "";
      $("trk-info").textContent = `frame ${index + 1}: ${Math.round(result.ms)} ms${perObject ? ` · ${perObject}${token}` : ""}`;
      $("trk-info").dataset.bytes = result.bytes === null ? "" : String(result.bytes);
    } else {
      $("trk-info").textContent = index === 0 ? `${this.objects.length} object(s) to track` : "not tracked yet";
    }
  },
  async step() {
    if (!this.frames.length) { busy("Pick frames first"); return false; }
    if (!this.objects.length) { busy("Draw an object on the first frame"); return false; }
    const starting = this.states === null;
    const index = starting ? 0 : this.last + 1;
    if (index >= this.frames.length) { busy("That was the last frame"); return false; }
    const body = starting
      ? { image: this.frames[0].base64, shapes: this.objects, states: [] }
      : { image: this.frames[index].base64, shapes: this.objects.map(() => null), states: this.states };
    busy(`Tracking frame ${index + 1}…`);
    const result = await invoke(page.current.name, body);
    if (!result.ok || !result.json || !Array.isArray(result.json.states)) {
      report(result);
      return false;
    }
    const stored = result.headers.get("X-Tracker-State-Bytes");
    this.states = result.json.states;
    this.last = index;
    this.results[index] = { shapes: result.json.shapes, states: result.json.states, ms: result.ms,
      bytes: stored === null ? null : Number(stored) };
    this.show(index);
    report(result, `frame ${index + 1} of ${this.frames.length}`);
    return true;
  },
  async play() {
    this.playing = !this.playing;
    $("trk-play").textContent = this.playing ? "Pause" : "Play";
    while (this.playing && await this.step()) { /* one frame after the other */ }
    this.playing = false;
    $("trk-play").textContent = "Play";
  },
  restart() {
    Object.assign(this, { states: null, results: [], playing: false });
    this.show(0);
  },
};

const reid = {
  images: [null, null], boxes: [[], []],
  enter() {
    [stage0, stage1].forEach((stage, k) => { if (this.images[k]) { stage.show(this.images[k]); this.bind(k); } });
    this.draw(null);
  },
  async files(files, k) {
    this.images[k] = await loaded(files, k ? stage1 : stage0);
    this.boxes[k] = [];
    if (this.images[k]) this.bind(k);
  },
  bind(k) {
    (k ? stage1 : stage0).handlers = { onBox: (box) => { this.boxes[k].push(box); this.draw(null); } };
  },
  name: (k, i) => `${k ? "B" : "A"}${i + 1}`,
  draw(matches) {
    [stage0, stage1].forEach((stage, k) => {
      if (!stage.image) return;
      stage.clear();
      this.boxes[k].forEach((box, i) => {
        let pair = null;
        if (matches) pair = k === 0 ? matches[i] : matches.indexOf(i);
        const matched = pair !== null && pair !== undefined && pair >= 0;
        const color = matched ? PALETTE[(k === 0 ? i : pair) % PALETTE.length] : "#57606a";
        const label = `${this.name(k, i)}${matched ? ` = ${this.name(1 - k, pair)}` : matches ? " (no match)" : ""}`;
        drawShape(stage, { type: "rectangle", points: box }, i, label, color);
      });
    });
  },
  async run() {
    if (!this.images[0] || !this.images[1]) { busy("Pick both images first"); return; }
    const boxes = (k) => this.boxes[k].map((points) => ({ points, label_id: 0 }));
    const body = { image0: this.images[0].base64, image1: this.images[1].base64, boxes0: boxes(0), boxes1: boxes(1),
      threshold: Number($("reid-threshold").value), max_distance: Number($("reid-distance").value) };
    busy("Matching…");
    const result = await invoke(page.current.name, body);
    const matches = result.ok && Array.isArray(result.json) ? result.json : null;
    this.draw(matches);
    listShapes((matches || []).map((j, i) => ({ text: j >= 0 ? `${this.name(0, i)} = ${this.name(1, j)}` : `${this.name(0, i)}: no match` })));
    report(result, matches ? `${matches.filter((j) => j >= 0).length} match(es)` : "");
  },
  clear() { this.boxes = [[], []]; this.draw(null); },
};

const VIEWS = { detector, interactor, tracker, reid };

// ---------------------------------------------------------------- the function list

function doorLinks(fn) {
  const base = `${location.protocol}//${location.hostname}:${fn.port}`;
  return Object.entries(fn.doors).map(([door, path]) => element("a", { href: base + path, "data-door": door },
    `${door}: ${base}${path}`));
}

// the labels of a function: all of them, the first dozen in view and the rest behind a disclosure
function labelCell(fn) {
  const cell = element("td", { class: "labels" });
  const names = fn.labels.map((l) => l.sublabels.length ? `${l.name} (${l.sublabels.join(", ")})` : l.name);
  const vocabulary = fn.open_vocabulary ? " — open vocabulary: any text prompt" : "";
  if (names.length <= 12) {
    cell.textContent = (names.join(", ") || "—") + vocabulary;
    return cell;
  }
  const more = element("details");
  more.append(element("summary", {}, `${names.slice(0, 12).join(", ")}, … (${names.length} labels)${vocabulary}`),
    names.slice(12).join(", "));
  cell.append(more);
  return cell;
}

function renderFunctions() {
  const body = $("functions").tBodies[0];
  body.replaceChildren();
  for (const fn of page.functions) {
    const row = element("tr", { "data-function": fn.name, "data-kind": fn.kind, "data-state": fn.state });
    if (page.current && page.current.name === fn.name) row.classList.add("selected");
    const name = element("td");
    name.append(element("strong", {}, fn.title), element("br"), element("code", {}, fn.name));
    const state = element("td", { class: `state-${fn.state}` }, fn.state);
    if (fn.message) state.append(element("br"), element("small", {}, fn.message));
    const doors = element("td", { class: "doors" });
    doors.append(...doorLinks(fn));
    const tryCell = element("td");
    const button = element("button", { type: "button", "data-try": fn.name, "aria-label": `Try ${fn.name}` }, "Try");
    button.disabled = fn.state !== "ready";
    button.addEventListener("click", () => select(fn.name));
    tryCell.append(button);
    row.append(name, element("td", {}, fn.kind), state, element("td", {}, String(fn.workers)),
      element("td", {}, fn.device || "—"), element("td", {}, fn.backend || "—"),
      labelCell(fn), doors, tryCell);
    body.append(row);
  }
}

async function refresh() {
  try {
    const response = await fetch("/api/playground/functions", { cache: "no-store" });
    page.functions = await response.json();
  } catch (error) {
    $("functions-status").textContent = `Could not list the functions: ${error.message}`;
    setTimeout(refresh, 3000);
    return;
  }
  const ready = page.functions.filter((f) => f.state === "ready").length;
  $("functions-status").textContent = `${page.functions.length} function(s), ${ready} ready`;
  renderFunctions();
  if (page.functions.some((f) => f.state === "building")) setTimeout(refresh, 2000);
  const wanted = new URLSearchParams(location.hash.slice(1)).get("fn");
  if (wanted && !page.current && page.functions.some((f) => f.name === wanted && f.state === "ready")) select(wanted);
}

function select(name) {
  const fn = page.functions.find((f) => f.name === name);
  if (!fn) return;
  const changedKind = !page.current || page.current.kind !== fn.kind;
  page.current = fn;
  page.view = VIEWS[fn.kind];
  history.replaceState(null, "", `#fn=${encodeURIComponent(name)}`);
  $("workspace").hidden = false;
  $("workspace-title").textContent = `${fn.title} (${fn.name})`;
  $("workspace-about").textContent = `${fn.kind} · ${fn.device || "device unknown"} · ${fn.backend || "backend unknown"} · ` +
    `${fn.workers} worker(s)`;
  document.querySelectorAll("#controls [data-kind]").forEach((part) => {
    part.hidden = !part.dataset.kind.split(" ").includes(fn.kind);
  });
  $("stage1").hidden = fn.kind !== "reid";
  stage0.handlers = stage1.handlers = null;
  if (changedKind) {
    stage0.reset(fn.kind === "tracker" ? "Pick or drop frames or a short video" : "Pick or drop an image");
    stage1.reset("Pick or drop the second image");
  }
  $("results").replaceChildren();
  $("reply").textContent = "";
  $("call-status").textContent = "";
  $("call-error").hidden = true;
  renderFunctions();
  page.view.enter(fn);
  $("workspace").scrollIntoView({ block: "start" });
}

// ---------------------------------------------------------------- wiring

onFile("det-image", (files) => detector.files(files));
onFile("int-image", (files) => interactor.files(files));
onFile("trk-frames", (files) => tracker.files(files));
onFile("reid-image0", (files) => reid.files(files, 0));
onFile("reid-image1", (files) => reid.files(files, 1));

$("det-threshold").addEventListener("input", () => {
  $("det-threshold-value").textContent = Number($("det-threshold").value).toFixed(2);
});
$("det-threshold").addEventListener("change", () => detector.image && detector.run());
$("reid-threshold").addEventListener("input", () => {
  $("reid-threshold-value").textContent = Number($("reid-threshold").value).toFixed(2);
});
$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  if (page.current && page.current.kind === "detector") detector.run();
  if (page.current && page.current.kind === "reid") reid.run();
});

const typedPoint = () => [Number($("int-x").value), Number($("int-y").value)];
$("int-add-pos").addEventListener("click", () => interactor.image && interactor.add(typedPoint(), true));
$("int-add-neg").addEventListener("click", () => interactor.image && interactor.add(typedPoint(), false));
$("int-undo").addEventListener("click", () => interactor.undo());
$("int-clear").addEventListener("click", () => interactor.clear());

// the box typed in the Box fields, corners in either order
function typedBox() {
  const [x1, y1, x2, y2] = ["box-x1", "box-y1", "box-x2", "box-y2"].map((id) => Number($(id).value));
  return [Math.min(x1, x2), Math.min(y1, y2), Math.max(x1, x2), Math.max(y1, y2)];
}
$("trk-add-box").addEventListener("click", () => {
  if (tracker.frames.length && !tracker.states) tracker.addBox(typedBox());
});
[0, 1].forEach((k) => $(`reid-add${k}`).addEventListener("click", () => {
  if (reid.images[k]) { reid.boxes[k].push(typedBox()); reid.draw(null); }
}));
$("trk-close").addEventListener("click", () => tracker.addOutline(tracker.outline));
$("trk-clear").addEventListener("click", () => { tracker.objects = []; tracker.outline = []; tracker.restart(); });
$("trk-step").addEventListener("click", () => tracker.step());
$("trk-play").addEventListener("click", () => tracker.play());
$("trk-reset").addEventListener("click", () => tracker.restart());
$("trk-frame").addEventListener("input", () => tracker.show(Number($("trk-frame").value)));
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && page.view === tracker && tracker.outline.length && event.target.tagName !== "BUTTON") {
    event.preventDefault();
    tracker.addOutline(tracker.outline);
  }
});
$("reid-clear").addEventListener("click", () => reid.clear());

refresh();
