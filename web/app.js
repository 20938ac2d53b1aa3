// The demo page: loads ?model=URL (a .tflite and the .json beside it) with LiteRT.js, then runs it on the
// camera, or on one picture with ?image=URL. window.poseDemo holds what the page shows, for tests.
import {isWebGPUSupported, loadAndCompile, loadLiteRt, Tensor} from "@litertjs/core";
import {ContractError, OneEuroFilter, decodeHeatmaps, prepareInput, readContract} from "./pose.js";

const params = new URLSearchParams(location.search);
const threshold = Number(params.get("threshold") ?? 0.1);
const state = window.poseDemo = {
  phase: "loading", mode: null, error: null, accelerator: null, frames: 0, fps: 0, modelMs: 0, keypoints: null,
};

class DemoError extends Error {}

const $ = (id) => document.getElementById(id);

main().catch(showError);

async function main() {
  const modelUrl = params.get("model");
  if (!modelUrl) {
    throw new DemoError("No model given. Open this page with ?model=URL of a .tflite that has its .json beside it; " +
      "`python -m pipeline demo --model PATH.tflite` prints such a URL.");
  }
  const model = await loadModel(new URL(modelUrl, document.baseURI));
  $("picture-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) stillImage(model, URL.createObjectURL(file), file.name).catch(showError);
  });
  if (params.has("benchmark")) return benchmark(model, Number(params.get("benchmark")) || 50);
  const image = params.get("image");
  if (image) return stillImage(model, new URL(image, document.baseURI).href, image);
  return camera(model);
}

async function loadModel(modelUrl) {
  if (!/\.tflite$/.test(modelUrl.pathname)) {
    throw new DemoError(`Model URL ${modelUrl.href} does not end in .tflite; the page needs it to find the .json beside it.`);
  }
  const metadataUrl = new URL(modelUrl.href.replace(/\.tflite(?=$|[?#])/, ".json"));
  setStatus(`Loading ${metadataUrl.pathname}`);
  const metadataBytes = await fetchBytes(metadataUrl, "model description (.json)");
  let metadata;
  try {
    metadata = JSON.parse(new TextDecoder().decode(metadataBytes));
  } catch (error) {
    throw new DemoError(`Model description ${metadataUrl.href} is not valid JSON: ${error.message}`);
  }
  const contract = readContract(metadata, metadataUrl.href);
  $("model-name").textContent = `${modelUrl.pathname.split("/").pop()} (${contract.name || "?"} contract, ` +
    `${contract.inputSize} px, ${contract.pixels})`;

  setStatus("Loading the LiteRT.js runtime");
  await loadLiteRt(new URL("wasm/", document.baseURI).href);
  setStatus(`Loading ${modelUrl.pathname}`);
  const bytes = await fetchBytes(modelUrl, "model (.tflite)");
  const identifier = new TextDecoder().decode(bytes.subarray(4, 8));
  if (identifier !== "TFL3") {
    throw new DemoError(`Model ${modelUrl.href} is not a TFLite file (file identifier "${identifier}", expected "TFL3").`);
  }
  const compiled = await compile(bytes, modelUrl);
  const [input] = compiled.getInputDetails();
  const size = contract.inputSize;
  if (input.dtype !== "float32" || Array.from(input.shape).join() !== `1,${size},${size},3`) {
    throw new DemoError(`Model ${modelUrl.href} takes ${input.dtype} [${Array.from(input.shape)}]; the page feeds ` +
      `float32 [1,${size},${size},3] as its .json says (models with integer input are not supported here).`);
  }
  const outputs = compiled.getOutputDetails();
  let outputIndex = contract.outputName ? outputs.findIndex((o) => o.name === contract.outputName) : 0;
  if (outputIndex < 0) outputIndex = 0;
  const shape = Array.from(outputs[outputIndex].shape);
  const joints = contract.names.length;
  if (shape.length !== 4 || shape[3] !== joints || shape[1] * contract.outputStride !== size) {
    throw new DemoError(`Model ${modelUrl.href}: output ${outputs[outputIndex].name} has shape [${shape}]; expected ` +
      `[1, ${size / contract.outputStride}, ${size / contract.outputStride}, ${joints}] from its .json.`);
  }
  return {compiled, contract, outputIndex, heatmapShape: shape.slice(1), input: new Float32Array(size * size * 3)};
}

async function compile(bytes, modelUrl) {
  const wanted = params.get("accelerator") || (isWebGPUSupported() ? "webgpu" : "wasm");
  if (!["wasm", "webgpu"].includes(wanted)) throw new DemoError(`accelerator=${wanted}: expected wasm or webgpu`);
  try {
    const compiled = await loadAndCompile(bytes, {accelerator: wanted});
    state.accelerator = wanted;
    return compiled;
  } catch (error) {
    if (wanted !== "webgpu") throw new DemoError(`LiteRT.js cannot run ${modelUrl.href}: ${error.message || error}`);
    console.warn("WebGPU failed, running on the CPU (WASM):", error);
    state.accelerator = "wasm";
    return loadAndCompile(bytes, {accelerator: "wasm"});
  }
}

// Heatmaps (Float32Array, [h, w, K]) for the model input in model.input; also the milliseconds it took.
async function infer(model) {
  const started = performance.now();
  let tensor = new Tensor(model.input, [1, model.contract.inputSize, model.contract.inputSize, 3]);
  if (state.accelerator === "webgpu") {
    const moved = await tensor.moveTo("webgpu");
    tensor = moved;
  }
  const outputs = await model.compiled.run(tensor);
  tensor.delete();
  let output = outputs[model.outputIndex];
  if (output.accelerator !== "wasm") output = await output.moveTo("wasm");
  const heatmaps = output.toTypedArray().slice();
  output.delete();
  for (const other of outputs) if (!other.deleted) other.delete();
  return {heatmaps, ms: performance.now() - started};
}

async function stillImage(model, url, label) {
  state.mode = "image";
  $("still-image-offer").hidden = false;
  setStatus(`Running on ${label}`);
  // No EXIF turn: the page runs on the file's stored pixels, as every step of the pipeline decodes
  // them (pose/data/pixels.py, DECODE_FLAGS). Browsers turn a picture by its EXIF orientation (the
  // Chromium the tests run did so even with createImageBitmap's imageOrientation "none"), so the
  // EXIF segments go before decoding.
  const blob = new Blob([withoutExif(await fetchBytes(new URL(url), "picture"))]);
  let bitmap;
  try {
    // No colour management: the page sees the file's pixel values, as cv2.imread does.
    bitmap = await createImageBitmap(blob, {colorSpaceConversion: "none", premultiplyAlpha: "none"});
  } catch (error) {
    throw new DemoError(`Picture ${url} cannot be decoded as an image: ${error.message || error}`);
  }
  const {width, height} = bitmap;
  const canvas = $("view");
  canvas.width = width; canvas.height = height;
  canvas.hidden = false;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  const {contract} = model;
  prepareInput(rgba, width, height, contract.inputSize, contract.pixels, model.input);
  const {heatmaps, ms} = await infer(model);
  const [h, w, k] = model.heatmapShape;
  const keypoints = decodeHeatmaps(heatmaps, h, w, k, contract, width, height);
  drawSkeleton(context, keypoints, contract, Math.max(2, Math.max(width, height) / 150));
  report(keypoints, contract);
  state.modelMs = ms;
  state.phase = "done";
  setStatus(`${label}: model ${ms.toFixed(1)} ms (${state.accelerator})`);
}

async function camera(model) {
  state.mode = "camera";
  setStatus("Asking for the camera");
  let stream;
  try {
    if (!navigator.mediaDevices?.getUserMedia) throw new DOMException("this browser offers no camera API here " +
      "(cameras need https:// or http://127.0.0.1)", "NotSupportedError");
    stream = await navigator.mediaDevices.getUserMedia(
      {video: {facingMode: {ideal: "environment"}, width: {ideal: 640}, height: {ideal: 480}}, audio: false});
  } catch (error) {
    $("still-image-offer").hidden = false;
    const what = error.name === "NotAllowedError" ? "Camera access was refused" :
      error.name === "NotFoundError" ? "No camera was found" : "The camera is not available";
    throw new DemoError(`${what} (${error.name}: ${error.message}). ` +
      `Still-image mode works without one: pick a picture below, or add &image=URL to this page's address.`);
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  $("controls").hidden = false;
  const size = model.contract.inputSize;
  const crop = Object.assign(document.createElement("canvas"), {width: size, height: size});
  const cropContext = crop.getContext("2d", {willReadFrequently: true});
  cropContext.imageSmoothingQuality = "high";
  const view = $("view");
  const context = view.getContext("2d");
  const filters = model.contract.names.map(() => [new OneEuroFilter(), new OneEuroFilter()]);
  const smoothing = $("smoothing");
  smoothing.addEventListener("change", () => filters.flat().forEach((f) => f.reset()));
  const [h, w, k] = model.heatmapShape;
  let last = performance.now();
  setStatus("Running on the camera");

  const frame = async () => {
    const vw = video.videoWidth, vh = video.videoHeight;
    if (vw && vh) {
      // The person box: the largest centred square, which the model sees as its whole input.
      const side = Math.min(vw, vh), left = (vw - side) / 2, top = (vh - side) / 2;
      cropContext.drawImage(video, left, top, side, side, 0, 0, size, size);
      prepareInput(cropContext.getImageData(0, 0, size, size).data, size, size, size, model.contract.pixels, model.input);
      const {heatmaps, ms} = await infer(model);
      const now = performance.now();
      let keypoints = decodeHeatmaps(heatmaps, h, w, k, model.contract, size, size)
        .map(([x, y, score]) => [left + (x + 0.5) * side / size - 0.5, top + (y + 0.5) * side / size - 0.5, score]);
      if (smoothing.checked) {
        keypoints = keypoints.map(([x, y, score], j) =>
          [filters[j][0].filter(x, now / 1000), filters[j][1].filter(y, now / 1000), score]);
      }
      if (view.width !== vw || view.height !== vh) { view.width = vw; view.height = vh; view.hidden = false; }
      context.drawImage(video, 0, 0, vw, vh);
      context.strokeStyle = "rgba(255, 255, 255, 0.7)";
      context.lineWidth = 2;
      context.setLineDash([8, 6]);
      context.strokeRect(left, top, side, side);
      context.setLineDash([]);
      drawSkeleton(context, keypoints, model.contract, Math.max(2, side / 120));
      const fps = 1000 / Math.max(now - last, 1);
      last = now;
      state.frames += 1;
      state.fps = state.frames === 1 ? fps : 0.9 * state.fps + 0.1 * fps;
      state.modelMs = state.frames === 1 ? ms : 0.9 * state.modelMs + 0.1 * ms;
      state.phase = "running";
      $("stats").textContent = `${state.fps.toFixed(1)} frames/s · model ${state.modelMs.toFixed(1)} ms (${state.accelerator})`;
      report(keypoints, model.contract);
    }
    requestAnimationFrame(() => frame().catch(showError));
  };
  await frame();
}

// ?benchmark=N: N timed runs of the model on a fixed input after 5 warm-up runs (benchmarks/web_demo.py).
// "run" times model.run alone (LiteRT Python's invoke); "frame" adds the input tensor and the read-back.
async function benchmark(model, runs) {
  state.mode = "benchmark";
  const top = model.contract.pixels === "bgr_0_255" ? 255 : 1;
  model.input.forEach((_, i, array) => { array[i] = ((i * 2654435761) % 1000) / 1000 * top; });
  const size = model.contract.inputSize;
  const runTimes = [], frameTimes = [];
  for (let i = 0; i < runs + 5; i++) {
    const tensor = new Tensor(model.input, [1, size, size, 3]);
    const started = performance.now();
    const outputs = await model.compiled.run(tensor);
    const ran = performance.now();
    tensor.delete();
    outputs.forEach((output) => output.delete());
    const {ms} = await infer(model);
    if (i >= 5) { runTimes.push(ran - started); frameTimes.push(ms); }
  }
  const median = (times) => times.slice().sort((a, b) => a - b)[Math.floor(times.length / 2)];
  const p90 = (times) => times.slice().sort((a, b) => a - b)[Math.min(times.length - 1, Math.floor(times.length * 0.9))];
  const result = {accelerator: state.accelerator, runs, median_ms: median(runTimes), p90_ms: p90(runTimes),
                  frame_median_ms: median(frameTimes)};
  $("keypoints").textContent = JSON.stringify(result);
  state.benchmark = result;
  state.phase = "done";
  setStatus(`benchmark: model.run median ${result.median_ms.toFixed(2)} ms over ${runs} runs (${state.accelerator})`);
}

function report(keypoints, contract) {
  state.keypoints = {order: contract.names, keypoints: keypoints.map(([x, y, s]) => [round(x), round(y), round(s)])};
  $("keypoints").textContent = JSON.stringify(state.keypoints);
}

function round(value) { return Math.round(value * 1e4) / 1e4; }

function drawSkeleton(context, keypoints, contract, width) {
  context.lineWidth = width;
  context.lineCap = "round";
  for (const [a, b] of contract.skeleton) {
    if (keypoints[a][2] < threshold || keypoints[b][2] < threshold) continue;
    // The person's right side in orange, left in cyan, the centre line in white (by the joint's name).
    const side = (j) => (/^(right|r)([_ -]|$)|^Right/.test(contract.names[j]) ? 1
      : /^(left|l)([_ -]|$)|^Left/.test(contract.names[j]) ? -1 : 0);
    const s = side(a) || side(b);
    context.strokeStyle = s > 0 ? "#ff9f1c" : s < 0 ? "#2ec4b6" : "#ffffff";
    context.beginPath();
    context.moveTo(keypoints[a][0], keypoints[a][1]);
    context.lineTo(keypoints[b][0], keypoints[b][1]);
    context.stroke();
  }
  context.fillStyle = "#e71d36";
  for (const [x, y, score] of keypoints) {
    if (score < threshold) continue;
    context.beginPath();
    context.arc(x, y, width * 1.2, 0, 2 * Math.PI);
    context.fill();
  }
}

// A JPEG's bytes without its APP1 segments (EXIF, XMP), which hold its orientation but no pixels;
// any other file as it is.
function withoutExif(bytes) {
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return bytes;
  const kept = [bytes.subarray(0, 2)];
  let at = 2;
  while (at + 4 <= bytes.length && bytes[at] === 0xff && bytes[at + 1] !== 0xda) {
    const end = at + 2 + ((bytes[at + 2] << 8) | bytes[at + 3]);
    if (bytes[at + 1] !== 0xe1) kept.push(bytes.subarray(at, end));
    at = end;
  }
  kept.push(bytes.subarray(at));
  const out = new Uint8Array(kept.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of kept) { out.set(part, offset); offset += part.length; }
  return out;
}

async function fetchBytes(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new DemoError(`Could not load the ${what} from ${url.href}: ${error.message || error}`);
  }
  if (!response.ok) {
    throw new DemoError(`Could not load the ${what} from ${url.href}: HTTP ${response.status} ${response.statusText}`.trim());
  }
  return new Uint8Array(await response.arrayBuffer());
}

function setStatus(text) { $("status").textContent = text; }

function showError(error) {
  const known = error instanceof DemoError || error instanceof ContractError;
  const text = known ? error.message : `Unexpected error: ${error && (error.stack || error.message) || error}`;
  console.error(error);
  state.error = text;
  state.phase = "error";
  $("message").textContent = text;
  $("message").hidden = false;
  setStatus("Stopped.");
}
