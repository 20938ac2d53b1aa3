// Pure functions of the demo: the model contract, the square-crop input, heatmap decoding, smoothing.
// pose/evaluation/photos.py holds the Python twin of prepareInput and decodeHeatmaps (square_input,
// reference_keypoints); the browser tests compare both.

export const PIXEL_FORMATS = ["bgr_0_255", "rgb_0_1"];

export class ContractError extends Error {}

// Checks the model's .json and returns what the page needs from it; `where` names the file in messages.
export function readContract(metadata, where) {
  const contract = metadata && metadata.contract;
  if (!contract || typeof contract !== "object") {
    throw new ContractError(`${where} has no "contract" (pixel format and output channel order), so the page ` +
      `cannot know how to feed this model. Export the model again with the tflite step of this project, ` +
      `which writes it.`);
  }
  if (!PIXEL_FORMATS.includes(contract.pixels)) {
    throw new ContractError(`${where}: contract.pixels is ${JSON.stringify(contract.pixels)}; ` +
      `expected one of ${PIXEL_FORMATS.join(", ")}`);
  }
  // The joints come from the model's own keypoint set (pose.data.keypoints.KeypointSet.to_json):
  // the page knows no skeleton of its own.
  const set = metadata.keypoint_set;
  const names = set && set.keypoints;
  if (!Array.isArray(names) || !names.length || new Set(names).size !== names.length ||
      !names.every((name) => typeof name === "string")) {
    throw new ContractError(`${where} has no "keypoint_set" with its joint names (keypoint_set.keypoints), ` +
      `so the page cannot name or draw the joints. Export the model again with the tflite step of this project.`);
  }
  const order = contract.channel_order;
  if (!Array.isArray(order) || order.length !== names.length || new Set(order).size !== names.length ||
      !order.every((name) => names.includes(name))) {
    throw new ContractError(`${where}: contract.channel_order must list the ${names.length} joint names ` +
      `of its keypoint set (${names.join(", ")}) once each; it is ${JSON.stringify(order)}`);
  }
  const edges = Array.isArray(set.skeleton) ? set.skeleton : [];
  const skeleton = edges.map((edge) => (Array.isArray(edge) ? edge.map((name) => names.indexOf(name)) : [-1, -1]));
  if (skeleton.some(([a, b]) => a < 0 || b < 0)) {
    throw new ContractError(`${where}: keypoint_set.skeleton names a joint that is not in keypoint_set.keypoints`);
  }
  for (const key of ["input_size", "output_stride"]) {
    if (!(Number(metadata[key]) > 0)) {
      throw new ContractError(`${where}: "${key}" is ${JSON.stringify(metadata[key])}; expected a positive number`);
    }
  }
  return {
    name: contract.name || "",
    pixels: contract.pixels,
    // The joints in the set's order, the limbs between them (indices into names), and
    // channelToJoint[c]: the index in names of output channel c.
    names,
    skeleton,
    channelToJoint: order.map((name) => names.indexOf(name)),
    inputSize: Number(metadata.input_size),
    outputStride: Number(metadata.output_stride),
    outputName: metadata.output_name || null,
  };
}

// The square the picture (or crop) is padded to: side = the longer side, picture centred, black around it.
export function squareOf(width, height) {
  const side = Math.max(width, height);
  return {side, offsetX: Math.floor((side - width) / 2), offsetY: Math.floor((side - height) / 2)};
}

// Model input [size, size, 3] float32 from RGBA pixels (width x height) padded to a square and resized
// bilinearly with pixel centres aligned: the same numbers as cv2.resize(INTER_LINEAR) of the padded
// picture as float32, which is what the Python twin does.
export function prepareInput(rgba, width, height, size, pixels, out) {
  const {side, offsetX, offsetY} = squareOf(width, height);
  const input = out || new Float32Array(size * size * 3);
  const scale = side / size;
  const bgr = pixels === "bgr_0_255";
  const unit = bgr ? 1 : 1 / 255;
  const xs = sampling(size, scale, side, offsetX, width);
  const ys = sampling(size, scale, side, offsetY, height);
  let o = 0;
  for (let j = 0; j < size; j++) {
    const y0 = ys.low[j], y1 = ys.high[j], fy = ys.frac[j];
    for (let i = 0; i < size; i++) {
      const x0 = xs.low[i], x1 = xs.high[i], fx = xs.frac[i];
      let r = 0, g = 0, b = 0;
      // Each corner is a picture pixel or the black padding (-1).
      const corners = [[x0, y0, (1 - fx) * (1 - fy)], [x1, y0, fx * (1 - fy)],
                       [x0, y1, (1 - fx) * fy], [x1, y1, fx * fy]];
      for (const [x, y, weight] of corners) {
        if (x < 0 || y < 0 || weight === 0) continue;
        const p = (y * width + x) * 4;
        r += weight * rgba[p]; g += weight * rgba[p + 1]; b += weight * rgba[p + 2];
      }
      if (bgr) { input[o] = b * unit; input[o + 1] = g * unit; input[o + 2] = r * unit; }
      else { input[o] = r * unit; input[o + 1] = g * unit; input[o + 2] = b * unit; }
      o += 3;
    }
  }
  return input;
}

// Source columns (or rows) of each output pixel: (i + 0.5) * scale - 0.5, clamped at the square's
// border as cv2 does, then shifted into the picture (-1 where it falls in the padding).
function sampling(size, scale, side, offset, extent) {
  const low = new Int32Array(size), high = new Int32Array(size), frac = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const source = (i + 0.5) * scale - 0.5;
    let base = Math.floor(source);
    let f = source - base;
    if (base < 0) { base = 0; f = 0; }
    if (base >= side - 1) { base = side - 1; f = 0; }
    const next = Math.min(base + 1, side - 1);
    const inside = (v) => (v - offset >= 0 && v - offset < extent ? v - offset : -1);
    low[i] = inside(base); high[i] = inside(next); frac[i] = f;
  }
  return {low, high, frac};
}

// Heatmaps [h, w, K] (NHWC, batch 1) -> [[x, y, score] x K] in the keypoint set's order
// (contract.names), in the picture's pixels.
// Python twin: pose.codec.decode(refine="quarter") (argmax, then a quarter pixel towards the higher
// neighbour), heatmap_to_input, then the square's scale and offset.
export function decodeHeatmaps(heatmaps, h, w, k, contract, width, height) {
  const {side, offsetX, offsetY} = squareOf(width, height);
  const toSquare = side / contract.inputSize;
  const result = new Array(contract.names.length);
  for (let c = 0; c < k; c++) {
    let best = 0, bestValue = -Infinity;
    for (let p = 0; p < h * w; p++) {
      const value = heatmaps[p * k + c];
      if (value > bestValue) { bestValue = value; best = p; }
    }
    const y = Math.floor(best / w), x = best % w;
    const at = (yy, xx) => heatmaps[(yy * w + xx) * k + c];
    const right = at(y, Math.min(x + 1, w - 1)), left = at(y, Math.max(x - 1, 0));
    const down = at(Math.min(y + 1, h - 1), x), up = at(Math.max(y - 1, 0), x);
    const hx = x + 0.25 * Math.sign(right - left);
    const hy = y + 0.25 * Math.sign(down - up);
    const inputX = (hx + 0.5) * contract.outputStride - 0.5;
    const inputY = (hy + 0.5) * contract.outputStride - 0.5;
    result[contract.channelToJoint[c]] = [
      (inputX + 0.5) * toSquare - 0.5 - offsetX,
      (inputY + 0.5) * toSquare - 0.5 - offsetY,
      bestValue,
    ];
  }
  return result;
}

// One-Euro filter (Casiez, Roussel and Vogel, CHI 2012): smooths slow movement hard and fast movement
// little, which removes the shake of a still pose without lagging behind a moving one.
export class OneEuroFilter {
  constructor({minCutoff = 1.0, beta = 0.05, derivativeCutoff = 1.0} = {}) {
    Object.assign(this, {minCutoff, beta, derivativeCutoff});
    this.reset();
  }

  reset() { this.previous = null; this.previousDerivative = 0; this.previousTime = null; }

  filter(value, timeSeconds) {
    if (this.previous === null) {
      this.previous = value; this.previousTime = timeSeconds;
      return value;
    }
    const dt = Math.max(timeSeconds - this.previousTime, 1e-3);
    const derivative = (value - this.previous) / dt;
    const smoothedDerivative = lerp(this.previousDerivative, derivative, alpha(this.derivativeCutoff, dt));
    const cutoff = this.minCutoff + this.beta * Math.abs(smoothedDerivative);
    const smoothed = lerp(this.previous, value, alpha(cutoff, dt));
    this.previous = smoothed; this.previousDerivative = smoothedDerivative; this.previousTime = timeSeconds;
    return smoothed;
  }
}

function alpha(cutoff, dt) {
  const tau = 1 / (2 * Math.PI * cutoff);
  return 1 / (1 + tau / dt);
}

function lerp(from, to, weight) { return from + weight * (to - from); }
