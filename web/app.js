// The lcm.c page: a form, a POST to /api/generate answered with server-sent events (queued,
// progress, preview, result or failure), the result with its parameters and a download link, and
// a history strip of this session's images (a click shows one again and puts its settings back in
// the form). The seed each run used is written back into the seed field; "Reuse seed" keeps it,
// "Random" draws a new one per run. No libraries, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("form"), go = $("go"), statusLine = $("status"), bar = $("progress");
let running = null; // the AbortController of the request in flight

// Ranges show their value next to their label.
for (const id of ["width", "height", "steps", "guidance", "strength", "control_scale"]) {
  const input = $(id), out = $(id + "_out");
  input.addEventListener("input", () => { out.textContent = input.value; });
}
let shownSeed = null; // the seed of the image shown, for "Reuse seed"

function setRandomize(on) {
  $("randomize").checked = on;
  $("seed").disabled = on;
}
$("randomize").addEventListener("change", (e) => setRandomize(e.target.checked));
$("seed_random").addEventListener("click", () => setRandomize(true));
$("seed_reuse").addEventListener("click", () => {
  if (shownSeed === null) return;
  $("seed").value = shownSeed;
  setRandomize(false);
});

// Example prompts fill the prompt box.
for (const b of document.querySelectorAll("button.example"))
  b.addEventListener("click", () => { $("prompt").value = b.textContent; $("prompt").focus(); });

// The chosen init/control image as a thumbnail beside its input, with its name and size.
function previewFile(inputId, previewId) {
  const input = $(inputId), fig = $(previewId), img = fig.querySelector("img");
  input.addEventListener("change", () => {
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    const file = input.files[0];
    fig.hidden = !file;
    if (!file) { img.removeAttribute("src"); return; }
    img.onload = () => {
      fig.querySelector("figcaption").textContent = `${file.name} · ${img.naturalWidth}×${img.naturalHeight}`;
    };
    img.onerror = () => { fig.querySelector("figcaption").textContent = `${file.name}: the browser cannot show this image`; };
    img.src = URL.createObjectURL(file);
  });
}
previewFile("init_image", "init_preview");
previewFile("control_image", "control_preview");
// The canny thresholds only matter for canny.
// The canny thresholds and the preprocessor resolution only matter for their module.
function showModuleOptions() {
  $("canny_thresholds").hidden = $("control_module").value !== "canny";
  $("processor_res_field").hidden = $("control_module").value !== "normal_bae";
}
$("control_module").addEventListener("change", showModuleOptions);

// Enter submits from the prompt boxes; Shift+Enter keeps its usual meaning.
for (const id of ["prompt", "negative_prompt"]) {
  $(id).addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
}

function setRange(id, min, max, step, value) {
  const input = $(id);
  Object.assign(input, { min, max, step });
  input.value = value;
  $(id + "_out").textContent = input.value;
}

// The form follows what the server says about the model: sizes, limits and optional controls.
async function loadCapabilities() {
  try {
    const caps = await (await fetch("/api/capabilities")).json();
    $("model").textContent = caps.model;
    setRange("width", caps.min_size, caps.max_size, caps.size_step, caps.default_size);
    setRange("height", caps.min_size, caps.max_size, caps.size_step, caps.default_size);
    setRange("steps", 1, caps.max_steps, 1, caps.default_steps);
    $("guidance").value = caps.default_guidance;
    $("guidance_out").textContent = caps.default_guidance;
    $("count").max = caps.max_images;
    $("key_field").hidden = !caps.api_key_required;
    for (const el of document.querySelectorAll("[data-feature]"))
      el.hidden = !caps.features[el.dataset.feature];
    if (caps.controlnet) $("controlnet_name").textContent = caps.controlnet;
    if (caps.loras && caps.loras.length) $("loras").textContent = "LoRA: " + caps.loras.join(", ");
    // The reference workflow: a photo turned into a normal map, when the server can.
    if (caps.features.normalbae) $("control_module").value = "normal_bae";
    if (caps.default_processor_res) $("processor_res").value = caps.default_processor_res;
    showModuleOptions();
  } catch (err) {
    showError("Could not read the server's capabilities: " + err.message);
  }
}

function showError(message) {
  statusLine.textContent = message;
  statusLine.className = "error";
}

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result); // a data: URL, which the server accepts
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// The server reads PNG, JPEG and WebP (it tells them apart by their bytes); other formats the
// browser can show (GIF, BMP, AVIF, ...) are redrawn through a canvas as PNG (same pixels, no alpha).
async function imageData(file) {
  if (["image/png", "image/jpeg", "image/webp"].includes(file.type)) return fileAsBase64(file);
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  return canvas.toDataURL("image/png");
}

// The ControlNet unit in the sd-webui-controlnet extension's format.
async function controlUnit() {
  const file = $("control_image").files[0];
  if (!file) throw new Error("choose a control image (or a photo to preprocess) first");
  const unit = {
    enabled: true,
    image: await imageData(file),
    module: $("control_module").value,
    weight: Number($("control_scale").value),
  };
  if (unit.module === "canny") {
    unit.threshold_a = Number($("canny_low").value);
    unit.threshold_b = Number($("canny_high").value);
  }
  if (unit.module === "normal_bae") unit.processor_res = Number($("processor_res").value);
  return unit;
}

async function buildRequest() {
  const body = {
    prompt: $("prompt").value,
    seed: $("randomize").checked ? -1 : Number($("seed").value),
    width: Number($("width").value),
    height: Number($("height").value),
    steps: Number($("steps").value),
    cfg_scale: Number($("guidance").value),
    batch_size: Number($("count").value),
  };
  if (!$("negative_prompt").closest("[data-feature]").hidden && $("negative_prompt").value)
    body.negative_prompt = $("negative_prompt").value;
  const init = $("init_image");
  if (!init.closest("[data-feature]").hidden && init.files.length) {
    body.init_images = [await imageData(init.files[0])];
    body.denoising_strength = Number($("strength").value);
  }
  if (!$("control_image").closest("[data-feature]").hidden)
    body.alwayson_scripts = { controlnet: { args: [await controlUnit()] } };
  return body;
}

function seconds(s) { return s < 10 ? s.toFixed(1) + " s" : Math.round(s) + " s"; }

function showProgress(p) {
  bar.hidden = false;
  bar.max = p.steps;
  bar.value = p.step;
  const eta = p.step > 0 ? (p.elapsed / p.step) * (p.steps - p.step) : 0;
  statusLine.className = "";
  statusLine.textContent = `Step ${p.step} of ${p.steps} · ${seconds(p.elapsed)} elapsed · ETA ${seconds(eta)}`;
}

function showPreview(p) {
  const images = $("images");
  let img = images.querySelector("img.preview");
  if (!img) {
    images.replaceChildren();
    img = document.createElement("img");
    img.className = "preview";
    img.alt = "preview of the image being generated";
    images.append(img);
  }
  img.src = "data:image/png;base64," + p.image;
}

function figure(item) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = item.src;
  img.alt = item.prompt;
  img.onload = () => { img.style.width = Math.max(img.naturalWidth, 256) + "px"; };
  const caption = document.createElement("figcaption");
  const link = document.createElement("a");
  link.href = item.src;
  link.download = `lcm-${item.seed}.png`;
  link.textContent = "Download PNG";
  caption.append(`Seed ${item.seed} · `, link);
  fig.append(img, caption);
  return fig;
}

// The control map the ControlNet saw, beside the result (as the reference demo shows its normal map).
function controlFigure(item) {
  const fig = document.createElement("figure");
  fig.className = "control";
  const img = document.createElement("img");
  img.src = item.src;
  img.alt = `control map (${item.module})`;
  img.onload = () => { img.style.width = Math.max(img.naturalWidth, 256) + "px"; };
  const caption = document.createElement("figcaption");
  caption.textContent = item.module === "none" ? "Control image" : `Control map (${item.module})`;
  fig.append(img, caption);
  return fig;
}

function show(items) {
  shownSeed = items[0].seed;
  $("seed_reuse").disabled = false;
  const figures = items.map(figure);
  const control = items.find((i) => i.controlMap)?.controlMap;
  if (control) figures.push(controlFigure(control));
  $("images").replaceChildren(...figures);
  $("parameters").hidden = false;
  $("parameters").textContent = items.map((i) => i.parameters).join("\n\n");
  for (const b of $("history").children) b.setAttribute("aria-current", String(items.includes(b.item)));
}

function addToHistory(items) {
  $("history_title").hidden = false;
  for (const item of items) {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("role", "listitem");
    button.title = item.parameters;
    button.item = item;
    const img = document.createElement("img");
    img.src = item.src;
    img.alt = "earlier result: " + item.prompt;
    button.append(img);
    button.addEventListener("click", () => {
      show([item]);
      restoreSettings(item.settings, item.seed);
      statusLine.className = "";
      statusLine.textContent = `Settings of this image restored (seed ${item.seed}).`;
    });
    $("history").prepend(button);
  }
}

// Puts a result's settings back in the form: what the request asked for, with the seed it used.
function restoreSettings(settings, seed) {
  $("prompt").value = settings.prompt;
  if (settings.negative_prompt !== undefined) $("negative_prompt").value = settings.negative_prompt;
  for (const [id, value] of [["width", settings.width], ["height", settings.height], ["steps", settings.steps],
    ["guidance", settings.cfg_scale], ["strength", settings.denoising_strength], ["control_scale", settings.control_scale]]) {
    if (value === undefined) continue;
    $(id).value = value;
    $(id + "_out").textContent = $(id).value;
  }
  if (settings.control_module) { $("control_module").value = settings.control_module; showModuleOptions(); }
  $("seed").value = seed;
  setRandomize(false);
}

function showResult(r, request) {
  const unit = request.alwayson_scripts?.controlnet?.args?.[0];
  const settings = {
    prompt: request.prompt, negative_prompt: request.negative_prompt ?? "", width: request.width,
    height: request.height, steps: request.steps, cfg_scale: request.cfg_scale,
    denoising_strength: request.denoising_strength, control_module: unit?.module, control_scale: unit?.weight,
  };
  const items = r.images.map((b64, i) => ({
    src: "data:image/png;base64," + b64,
    parameters: r.info.infotexts[i],
    seed: r.info.all_seeds[i],
    prompt: r.info.prompt,
    settings,
    controlMap: r.control_image
      ? { control: true, src: "data:image/png;base64," + r.control_image, module: r.control_module } : null,
  }));
  addToHistory(items);
  show(items);
  $("seed").value = r.info.seed; // the seed used, also when it was drawn at random
  statusLine.className = "";
  statusLine.textContent = `Done: ${items.length} image${items.length > 1 ? "s" : ""} in ${seconds(r.info.elapsed)} (seed ${r.info.seed}).`;
}

// Reads a text/event-stream body and calls onEvent(name, data) for each event.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

function setRunning(controller) {
  running = controller;
  go.textContent = controller ? "Cancel" : "Generate";
  go.classList.toggle("cancel", !!controller);
  if (!controller) bar.hidden = true;
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (running) { running.abort(); return; } // the button is Cancel while running
  const controller = new AbortController();
  setRunning(controller);
  statusLine.className = "";
  statusLine.textContent = "Sending…";
  let finished = false;
  try {
    const headers = { "Content-Type": "application/json" };
    if ($("api_key").value) headers.Authorization = "Bearer " + $("api_key").value;
    const request = await buildRequest();
    const response = await fetch("/api/generate", {
      method: "POST", headers, body: JSON.stringify(request), signal: controller.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      if (response.status === 401) $("key_field").hidden = false;
      const retry = response.headers.get("Retry-After");
      showError((err.detail || response.statusText) + (retry ? ` (retry in ${retry} s)` : ""));
      return;
    }
    await readEvents(response, (name, data) => {
      if (name === "queued") statusLine.textContent = data.position ? `Waiting: ${data.position} ahead in the queue…` : "Starting…";
      else if (name === "progress") showProgress(data);
      else if (name === "preview") showPreview(data);
      else if (name === "result") { finished = true; showResult(data, request); }
      else if (name === "failure") { finished = true; showError(data.message); }
    });
    if (!finished) showError("The connection closed before the image was ready.");
  } catch (err) {
    if (err.name === "AbortError") { statusLine.className = ""; statusLine.textContent = "Cancelled."; }
    else showError("Request failed: " + err.message);
  } finally {
    setRunning(null);
  }
});

loadCapabilities();
