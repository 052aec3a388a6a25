// cnnlab explore: a trained classifier taken apart in the browser. No dependencies, no
// network unless served (then only this server's /v1/explore/*). The bundle (see
// cnnlab/deploy/explore.py) lists the forward pass as operations; in "weights" mode this
// file runs them itself (plain loops over Float32Arrays), otherwise it shows precomputed
// or server-computed outputs. Every number shown for a unit is computed from the real
// weights and the real input of that layer.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const hashKey = new URLSearchParams(location.hash.slice(1)).get("key");
  if (hashKey) { localStorage.setItem("cnnlab-key", hashKey); history.replaceState(null, "", location.pathname); }
  const apiKey = hashKey || localStorage.getItem("cnnlab-key");
  const auth = apiKey ? { authorization: "Bearer " + apiKey } : {};

  let B = null;            // the bundle
  let L = [];              // layers: spec, shape, decoded params
  let C = 1, S = 28;       // input channels and size
  let inputU8 = null;      // the input's pixels (C·S·S, 0-255)
  let input = null;        // normalised input (C·S·S)
  let acts = [];           // each operation's output (Float32Array)
  let fcTop = {};          // activations mode: precomputed FC contributions per layer
  let sampleIdx = null;    // the picked test image, or null (drawn / uploaded)
  let selected = null;     // {layer, unit}
  let seq = 0;
  const X = (window.explore = { latencies: [], computeMs: [], ready: false });

  // ---------------------------------------------------------------- decoding tensors
  function bytes(b64) {
    const s = atob(b64);
    const u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function f16(u) {
    const v = new DataView(u.buffer), n = u.length / 2, out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const h = v.getUint16(2 * i, true), sgn = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
      out[i] = e === 0 ? sgn * m * 2 ** -24 : e === 31 ? (m ? NaN : sgn * Infinity) : sgn * (1 + m / 1024) * 2 ** (e - 15);
    }
    return out;
  }
  function tensor(t) {
    const u = bytes(t.data);
    return { shape: t.shape, data: t.dtype === "f16" ? f16(u) : new Float32Array(u.buffer) };
  }
  const decodeParams = (p) => Object.fromEntries(Object.entries(p || {}).map(([k, t]) => [k, tensor(t)]));

  // ---------------------------------------------------------------- the operations
  const ACT = {
    relu: (x) => (x > 0 ? x : 0),
    tanh: Math.tanh,
    sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    lecun_tanh: (x) => 1.7159 * Math.tanh(x * (2 / 3)),
    identity: (x) => x,
    gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  };
  const ACT_TEXT = {
    relu: "max(0, z)", tanh: "tanh(z)", sigmoid: "1 / (1 + e^−z)", lecun_tanh: "1.7159·tanh(2z/3)",
    identity: "z", gelu: "z·Φ(z)", elu: "z if z > 0 else α(e^z − 1)", leaky_relu: "z if z > 0 else slope·z",
  };
  function erf(x) { // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
    const s = x < 0 ? -1 : 1, a = Math.abs(x), t = 1 / (1 + 0.3275911 * a);
    const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
    return s * y;
  }
  function actFn(spec) {
    if (spec.fn === "elu") return (x) => (x > 0 ? x : spec.alpha * (Math.exp(x) - 1));
    if (spec.fn === "leaky_relu") return (x) => (x > 0 ? x : spec.slope * x);
    return ACT[spec.fn];
  }
  const dims = (sh) => (sh.length === 3 ? sh : [sh[0], 1, 1]);
  const convOut = (n, k, s, p, d) => Math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1;

  function forwardOp(l, x, inShape, P) {
    const sp = l.spec, [c, h, w] = dims(inShape);
    const [oc, oh, ow] = dims(l.shape);
    const out = new Float32Array(l.shape.reduce((a, b) => a * b, 1));
    switch (sp.type) {
      case "conv2d": {
        const W = P.weight.data, bias = P.bias ? P.bias.data : null;
        const [kh, kw] = sp.kernel, [sh, sw] = sp.stride, [ph, pw] = sp.padding, [dh, dw] = sp.dilation;
        const cpg = c / sp.groups, opg = oc / sp.groups;
        for (let o = 0; o < oc; o++) {
          const c0 = Math.floor(o / opg) * cpg;
          for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
            let s = bias ? bias[o] : 0;
            for (let ci = 0; ci < cpg; ci++) {
              const xb = (c0 + ci) * h * w, wb = (o * cpg + ci) * kh * kw;
              for (let ky = 0; ky < kh; ky++) {
                const iy = y * sh - ph + ky * dh;
                if (iy < 0 || iy >= h) continue;
                for (let kx = 0; kx < kw; kx++) {
                  const ix = xx * sw - pw + kx * dw;
                  if (ix >= 0 && ix < w) s += W[wb + ky * kw + kx] * x[xb + iy * w + ix];
                }
              }
            }
            out[(o * oh + y) * ow + xx] = s;
          }
        }
        return out;
      }
      case "linear": {
        const W = P.weight.data, bias = P.bias ? P.bias.data : null, n = sp.in;
        for (let j = 0; j < sp.out; j++) {
          let s = bias ? bias[j] : 0;
          const b = j * n;
          for (let i = 0; i < n; i++) s += W[b + i] * x[i];
          out[j] = s;
        }
        return out;
      }
      case "act": { const f = actFn(sp); for (let i = 0; i < x.length; i++) out[i] = f(x[i]); return out; }
      case "maxpool2d": case "avgpool2d": {
        for (let ch = 0; ch < oc; ch++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++)
          out[(ch * oh + y) * ow + xx] = poolWindow(sp, x, [c, h, w], ch, y, xx).value;
        return out;
      }
      case "adaptiveavgpool2d": {
        for (let ch = 0; ch < oc; ch++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
          const y0 = Math.floor((y * h) / oh), y1 = Math.ceil(((y + 1) * h) / oh);
          const x0 = Math.floor((xx * w) / ow), x1 = Math.ceil(((xx + 1) * w) / ow);
          let s = 0;
          for (let iy = y0; iy < y1; iy++) for (let ix = x0; ix < x1; ix++) s += x[(ch * h + iy) * w + ix];
          out[(ch * oh + y) * ow + xx] = s / ((y1 - y0) * (x1 - x0));
        }
        return out;
      }
      case "zeropad2d": {
        const [pl, , pt] = sp.padding;
        for (let ch = 0; ch < c; ch++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++)
          out[(ch * oh + y + pt) * ow + xx + pl] = x[(ch * h + y) * w + xx];
        return out;
      }
      case "batchnorm": {
        const hw = h * w;
        for (let ch = 0; ch < c; ch++) {
          const [a, b] = bnCoef(sp, P, ch);
          for (let i = 0; i < hw; i++) out[ch * hw + i] = (x[ch * hw + i] - P.running_mean.data[ch]) * a + b;
        }
        return out;
      }
      case "lrn": {
        const hw = h * w, lo = Math.floor(sp.size / 2), hi = Math.floor((sp.size - 1) / 2);
        for (let ch = 0; ch < c; ch++) for (let i = 0; i < hw; i++) {
          let s = 0;
          for (let q = ch - lo; q <= ch + hi; q++) if (q >= 0 && q < c) s += x[q * hw + i] ** 2;
          out[ch * hw + i] = x[ch * hw + i] / Math.pow(sp.k + (sp.alpha * s) / sp.size, sp.beta);
        }
        return out;
      }
      case "flatten": out.set(x); return out;
      default: throw new Error("the page cannot compute " + (sp.what || sp.type));
    }
  }
  function bnCoef(sp, P, ch) { // y = (x − mean)·a + b
    const inv = 1 / Math.sqrt(P.running_var.data[ch] + sp.eps);
    return sp.affine ? [inv * P.weight.data[ch], P.bias.data[ch]] : [inv, 0];
  }
  function poolWindow(sp, x, [c, h, w], ch, y, xx) {
    const [kh, kw] = sp.kernel, [sh, sw] = sp.stride, [ph, pw] = sp.padding;
    const y0 = y * sh - ph, x0 = xx * sw - pw, cells = [];
    let best = -Infinity, arg = -1, sum = 0, n = 0;
    for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
      const iy = y0 + ky, ix = x0 + kx, inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
      const v = inside ? x[(ch * h + iy) * w + ix] : sp.type === "maxpool2d" ? -Infinity : 0;
      cells.push({ v, pad: !inside });
      if (inside) { sum += v; n++; }
      if (v > best) { best = v; arg = cells.length - 1; }
    }
    if (sp.type === "maxpool2d") return { value: best, arg, cells };
    // torch: the divisor counts padding cells inside the padded input unless count_include_pad is off
    const ye = Math.min(y0 + kh, h + ph), xe = Math.min(x0 + kw, w + pw);
    const div = sp.count_include_pad ? (ye - y0) * (xe - x0) : n;
    return { value: sum / div, sum, div, cells };
  }

  // ---------------------------------------------------------------- gradients (attribution)
  // The gradient of one logit flows back through the operations (weights mode), for
  // saliency |∂ logit / ∂ pixel| and Grad-CAM on the last conv layer, as Captum computes
  // them in cnnlab explain.
  function backOp(l, x, inSh, out, g) {
    const sp = l.spec, P = l.P, [c, h, w] = dims(inSh), [oc, oh, ow] = dims(l.shape);
    const gi = new Float64Array(x.length);
    switch (sp.type) {
      case "linear": {
        const W = P.weight.data, n = sp.in;
        for (let j = 0; j < sp.out; j++) { const gj = g[j]; if (gj) for (let i = 0; i < n; i++) gi[i] += W[j * n + i] * gj; }
        return gi;
      }
      case "act": {
        const f = sp.fn;
        for (let i = 0; i < x.length; i++) {
          const v = x[i], o = out[i];
          const d = f === "relu" ? (v > 0 ? 1 : 0) : f === "tanh" ? 1 - o * o : f === "sigmoid" ? o * (1 - o)
            : f === "lecun_tanh" ? 1.7159 * (2 / 3) * (1 - Math.tanh(v * (2 / 3)) ** 2) : f === "elu" ? (v > 0 ? 1 : sp.alpha * Math.exp(v))
              : f === "leaky_relu" ? (v > 0 ? 1 : sp.slope) : f === "gelu" ? 0.5 * (1 + erf(v / Math.SQRT2)) + v * Math.exp(-v * v / 2) / Math.sqrt(2 * Math.PI) : 1;
          gi[i] = g[i] * d;
        }
        return gi;
      }
      case "conv2d": {
        const W = P.weight.data, [kh, kw] = sp.kernel, [sh, sw] = sp.stride, [ph, pw] = sp.padding, [dh, dw] = sp.dilation;
        const cpg = c / sp.groups, opg = oc / sp.groups;
        for (let o = 0; o < oc; o++) {
          const c0 = Math.floor(o / opg) * cpg;
          for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
            const gv = g[(o * oh + y) * ow + xx];
            if (!gv) continue;
            for (let ci = 0; ci < cpg; ci++) for (let ky = 0; ky < kh; ky++) {
              const iy = y * sh - ph + ky * dh;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = xx * sw - pw + kx * dw;
                if (ix >= 0 && ix < w) gi[((c0 + ci) * h + iy) * w + ix] += W[((o * cpg + ci) * kh + ky) * kw + kx] * gv;
              }
            }
          }
        }
        return gi;
      }
      case "maxpool2d": case "avgpool2d": {
        const kw = sp.kernel[1];
        for (let ch = 0; ch < oc; ch++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
          const gv = g[(ch * oh + y) * ow + xx], r = poolWindow(sp, x, [c, h, w], ch, y, xx);
          const y0 = y * sp.stride[0] - sp.padding[0], x0 = xx * sp.stride[1] - sp.padding[1];
          r.cells.forEach((cell, q) => {
            if (cell.pad) return;
            const iy = y0 + Math.floor(q / kw), ix = x0 + (q % kw), at = (ch * h + iy) * w + ix;
            if (sp.type === "maxpool2d") { if (q === r.arg) gi[at] += gv; } else gi[at] += gv / r.div;
          });
        }
        return gi;
      }
      case "adaptiveavgpool2d": {
        for (let ch = 0; ch < oc; ch++) for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
          const y0 = Math.floor((y * h) / oh), y1 = Math.ceil(((y + 1) * h) / oh), x0 = Math.floor((xx * w) / ow), x1 = Math.ceil(((xx + 1) * w) / ow);
          const gv = g[(ch * oh + y) * ow + xx] / ((y1 - y0) * (x1 - x0));
          for (let iy = y0; iy < y1; iy++) for (let ix = x0; ix < x1; ix++) gi[(ch * h + iy) * w + ix] += gv;
        }
        return gi;
      }
      case "zeropad2d": {
        const [pl, , pt] = sp.padding;
        for (let ch = 0; ch < c; ch++) for (let y = 0; y < h; y++) for (let xx = 0; xx < w; xx++) gi[(ch * h + y) * w + xx] = g[(ch * oh + y + pt) * ow + xx + pl];
        return gi;
      }
      case "batchnorm": {
        const hw = h * w;
        for (let ch = 0; ch < c; ch++) { const [a] = bnCoef(sp, P, ch); for (let i = 0; i < hw; i++) gi[ch * hw + i] = g[ch * hw + i] * a; }
        return gi;
      }
      case "flatten": gi.set(g); return gi;
      default: throw new Error("the page cannot differentiate " + (sp.what || sp.type));
    }
  }
  function gradients(k) { // ∂ logit_k / ∂ (every operation's input), back from the last
    const grads = new Array(L.length);
    let g = new Float64Array(L[L.length - 1].shape[0]);
    g[k] = 1;
    for (let i = L.length - 1; i >= 0; i--) {
      grads[i] = g; // ∂ logit / ∂ output of operation i
      g = backOp(L[i], inAct(i), inShape(i), acts[i], g);
    }
    return { input: g, outputs: grads };
  }
  function heat(m) { // as cnnlab.analysis.explain.heat: scaled by the 99th percentile
    const s = Float64Array.from(m).sort(), pos = 0.99 * (s.length - 1), lo = Math.floor(pos);
    let q = s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (pos - lo);
    if (!(q > 0)) q = Math.max(s[s.length - 1], 1e-12);
    return Float64Array.from(m, (v) => Math.min(1, Math.max(0, v / q)));
  }
  function attributionJS(k, method) { // a [0, 1] map (S×S)
    const gr = gradients(k), hw = S * S, m = new Float64Array(hw);
    if (method === "saliency") { // on [0, 1] pixels: ∂/∂pixel = ∂/∂x_normalised / std
      for (let ch = 0; ch < C; ch++) for (let i = 0; i < hw; i++) m[i] += Math.abs(gr.input[ch * hw + i] / B.input.std[ch]);
      return heat(m);
    }
    let i = -1;
    L.forEach((l, j) => { if (l.spec.type === "conv2d") i = j; });
    const [oc, oh, ow] = L[i].shape, A = acts[i], G = gr.outputs[i], cam = new Float64Array(oh * ow);
    for (let o = 0; o < oc; o++) {
      let a = 0;
      for (let q = 0; q < oh * ow; q++) a += G[o * oh * ow + q];
      a /= oh * ow;
      for (let q = 0; q < oh * ow; q++) cam[q] += a * A[o * oh * ow + q];
    }
    for (let q = 0; q < cam.length; q++) cam[q] = Math.max(0, cam[q]);
    const src = (d, n, N) => Math.max(0, ((d + 0.5) * n) / N - 0.5); // bilinear, align_corners=False
    for (let y = 0; y < S; y++) {
      const sy = src(y, oh, S), y0 = Math.floor(sy), y1 = Math.min(y0 + 1, oh - 1), ly = sy - y0;
      for (let x = 0; x < S; x++) {
        const sx = src(x, ow, S), x0 = Math.floor(sx), x1 = Math.min(x0 + 1, ow - 1), lx = sx - x0;
        m[y * S + x] = (1 - ly) * ((1 - lx) * cam[y0 * ow + x0] + lx * cam[y0 * ow + x1]) + ly * ((1 - lx) * cam[y1 * ow + x0] + lx * cam[y1 * ow + x1]);
      }
    }
    return heat(m);
  }

  function forward(x, upto = L.length, params = null) {
    const out = [];
    let h = x, shape = [C, S, S];
    for (let i = 0; i < upto; i++) {
      const P = (params && params[L[i].name]) || L[i].P;
      h = forwardOp(L[i], h, shape, P);
      out.push(h);
      shape = L[i].shape;
    }
    return out;
  }
  const inShape = (i) => (i === 0 ? [C, S, S] : L[i - 1].shape);
  const inAct = (i) => (i === 0 ? input : acts[i - 1]);

  // ---------------------------------------------------------------- drawing feature maps
  function color(v, m) { // white at 0; orange for positive, blue for negative
    const t = Math.max(-1, Math.min(1, m > 0 ? v / m : 0));
    return t >= 0 ? [255 - 20 * t, 255 - 150 * t, 255 - 235 * t] : [255 + 215 * t, 255 + 140 * t, 255 + 20 * t];
  }
  function layout(shape) {
    if (shape.length === 3) {
      const [c, h, w] = shape, scale = Math.max(1, Math.floor(56 / Math.max(h, w)));
      const cols = Math.min(c, c > 64 ? 24 : c > 16 ? 16 : 8), gap = 3;
      const rows = Math.ceil(c / cols), tw = w * scale + gap, th = h * scale + gap;
      return { kind: "maps", c, h, w, scale, cols, rows, tw, th, width: cols * tw, height: rows * th };
    }
    const n = shape[0], cell = n <= 16 ? 18 : n <= 256 ? 9 : 5, cols = Math.min(n, n <= 16 ? n : 32);
    return { kind: "units", n, cell, cols, width: cols * cell, height: Math.ceil(n / cols) * cell };
  }
  function paint(canvas, data, shape, image) {
    const g = layout(shape);
    canvas.width = g.width; canvas.height = g.height;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(g.width, g.height), d = img.data;
    let m = 0;
    for (let i = 0; i < data.length; i++) m = Math.max(m, Math.abs(data[i]));
    const put = (px, py, rgb) => { const o = 4 * (py * g.width + px); d[o] = rgb[0]; d[o + 1] = rgb[1]; d[o + 2] = rgb[2]; d[o + 3] = 255; };
    if (g.kind === "maps") {
      for (let ch = 0; ch < g.c; ch++) {
        const ox = (ch % g.cols) * g.tw, oy = Math.floor(ch / g.cols) * g.th;
        for (let y = 0; y < g.h; y++) for (let x = 0; x < g.w; x++) {
          const v = data[(ch * g.h + y) * g.w + x];
          const rgb = image ? [v, v, v] : color(v, m);
          for (let a = 0; a < g.scale; a++) for (let b = 0; b < g.scale; b++) put(ox + x * g.scale + b, oy + y * g.scale + a, rgb);
        }
      }
    } else {
      for (let j = 0; j < g.n; j++) {
        const rgb = color(data[j], m), ox = (j % g.cols) * g.cell, oy = Math.floor(j / g.cols) * g.cell;
        for (let a = 0; a < g.cell - 1; a++) for (let b = 0; b < g.cell - 1; b++) put(ox + b, oy + a, rgb);
      }
    }
    ctx.putImageData(img, 0, 0);
    return g;
  }
  function unitRect(g, unit) { // the cell of a unit on its layer's canvas
    if (g.kind === "units") return [(unit % g.cols) * g.cell, Math.floor(unit / g.cols) * g.cell, g.cell - 1, g.cell - 1];
    const ch = Math.floor(unit / (g.h * g.w)), r = unit % (g.h * g.w), y = Math.floor(r / g.w), x = r % g.w;
    return [(ch % g.cols) * g.tw + x * g.scale, Math.floor(ch / g.cols) * g.th + y * g.scale, g.scale, g.scale];
  }
  function unitAt(g, px, py) {
    if (g.kind === "units") {
      const j = Math.floor(py / g.cell) * g.cols + Math.floor(px / g.cell);
      return j < g.n && px < g.cols * g.cell ? j : null;
    }
    const col = Math.floor(px / g.tw), row = Math.floor(py / g.th), ch = row * g.cols + col;
    const x = Math.floor((px - col * g.tw) / g.scale), y = Math.floor((py - row * g.th) / g.scale);
    return ch < g.c && x < g.w && y < g.h && col < g.cols ? (ch * g.h + y) * g.w + x : null;
  }

  // ---------------------------------------------------------------- the layer view
  const views = []; // {canvas, g, data, image}
  function buildLayers() {
    const box = $("layers");
    box.innerHTML = "";
    views.length = 0;
    const mk = (i, title, shape) => {
      const div = document.createElement("div");
      div.className = "layer";
      div.innerHTML = `<div class="name"></div><div class="shape"></div>`;
      div.firstChild.textContent = title;
      div.children[1].textContent = shape.join("×");
      const cv = document.createElement("canvas");
      cv.dataset.layer = i;
      div.appendChild(cv);
      box.appendChild(div);
      if (i >= 0) cv.addEventListener("click", (ev) => {
        const r = cv.getBoundingClientRect(), v = views[i + 1];
        const u = unitAt(v.g, (ev.clientX - r.left) * cv.width / r.width, (ev.clientY - r.top) * cv.height / r.height);
        if (u !== null) select(i, u);
      });
      return cv;
    };
    views.push({ canvas: mk(-1, "input pixels", [C, S, S]) });
    L.forEach((l, i) => views.push({ canvas: mk(i, `${i + 1}. ${l.label}`, l.shape) }));
  }
  function paintLayers() {
    const pix = new Float32Array(inputU8.length);
    for (let i = 0; i < pix.length; i++) pix[i] = inputU8[i];
    views[0].g = paint(views[0].canvas, pix, [C, S, S], true);
    L.forEach((l, i) => { if (acts[i]) views[i + 1].g = paint(views[i + 1].canvas, acts[i], l.shape, false); });
    if (selected) outline();
  }
  function outline() {
    paintLayersQuiet();
    const { layer, unit } = selected, v = views[layer + 1];
    const ctx = v.canvas.getContext("2d"), [x, y, w, h] = unitRect(v.g, unit);
    ctx.strokeStyle = "#dc2626"; ctx.lineWidth = 2;
    ctx.strokeRect(x - 1, y - 1, w + 2, h + 2);
    const win = receptive(layer, unit), pv = views[layer];
    if (!win || !pv.g || pv.g.kind !== "maps") return;
    const pc = pv.canvas.getContext("2d");
    pc.strokeStyle = "#dc2626"; pc.lineWidth = 1;
    for (const ch of win.channels) {
      const ox = (ch % pv.g.cols) * pv.g.tw, oy = Math.floor(ch / pv.g.cols) * pv.g.th, s = pv.g.scale;
      const x0 = Math.max(0, win.x0), y0 = Math.max(0, win.y0), x1 = Math.min(pv.g.w, win.x1), y1 = Math.min(pv.g.h, win.y1);
      if (x1 > x0 && y1 > y0) pc.strokeRect(ox + x0 * s + 0.5, oy + y0 * s + 0.5, (x1 - x0) * s - 1, (y1 - y0) * s - 1);
    }
  }
  let quiet = false;
  function paintLayersQuiet() { // repaint the two canvases an outline is drawn on
    if (quiet || !selected) return;
    quiet = true;
    const { layer } = selected;
    const pix = Float32Array.from(inputU8);
    for (const i of [layer - 1, layer]) {
      if (i < 0) views[0].g = paint(views[0].canvas, pix, [C, S, S], true);
      else if (acts[i]) views[i + 1].g = paint(views[i + 1].canvas, acts[i], L[i].shape, false);
    }
    quiet = false;
  }
  function receptive(layer, unit) {
    const l = L[layer], sp = l.spec;
    if (l.shape.length !== 3) return null;
    const [oc, oh, ow] = l.shape, ch = Math.floor(unit / (oh * ow)), r = unit % (oh * ow), y = Math.floor(r / ow), x = r % ow;
    const [c] = dims(inShape(layer));
    if (sp.type === "conv2d") {
      const cpg = c / sp.groups, c0 = Math.floor(ch / (oc / sp.groups)) * cpg;
      const y0 = y * sp.stride[0] - sp.padding[0], x0 = x * sp.stride[1] - sp.padding[1];
      return { channels: Array.from({ length: cpg }, (_, i) => c0 + i), y0, x0, y1: y0 + (sp.kernel[0] - 1) * sp.dilation[0] + 1, x1: x0 + (sp.kernel[1] - 1) * sp.dilation[1] + 1 };
    }
    if (sp.type === "maxpool2d" || sp.type === "avgpool2d") {
      const y0 = y * sp.stride[0] - sp.padding[0], x0 = x * sp.stride[1] - sp.padding[1];
      return { channels: [ch], y0, x0, y1: y0 + sp.kernel[0], x1: x0 + sp.kernel[1] };
    }
    return { channels: [ch], y0: y, x0: x, y1: y + 1, x1: x + 1 };
  }

  // ---------------------------------------------------------------- one unit's arithmetic
  const fmt = (v) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : v.toFixed(4));
  const num = (v, id, cls) => `<span${id ? ` id="${id}"` : ""}${cls ? ` class="${cls}"` : ""} data-v="${v}">${fmt(v)}</span>`;
  function gridTable(title, vals, h, w, cls, pads, hi) {
    let s = `<table class="grid ${cls}"><caption>${title}</caption>`;
    for (let y = 0; y < h; y++) {
      s += "<tr>";
      for (let x = 0; x < w; x++) {
        const i = y * w + x, v = vals[i];
        const c = [cls, pads && pads[i] ? "pad" : "", hi === i ? "hi" : ""].filter(Boolean).join(" ");
        s += `<td class="${c}" data-v="${v}">${Number.isFinite(v) ? fmt(v) : v > 0 ? "∞" : "−∞"}</td>`;
      }
      s += "</tr>";
    }
    return s + "</table>";
  }
  async function unitWeights(i, o) { // {w: Float32Array, bias} of output unit o of layer i
    const l = L[i];
    if (l.P && l.P.weight) {
      const per = l.P.weight.data.length / l.P.weight.shape[0];
      return { w: l.P.weight.data.subarray(o * per, (o + 1) * per), bias: l.P.bias ? l.P.bias.data[o] : 0 };
    }
    if (B.served && l.params_on_server) {
      const r = await fetch(`/v1/explore/weights?layer=${i}&unit=${o}`, { headers: auth });
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.statusText);
      return { w: tensor({ ...j, dtype: "f32" }).data, bias: j.bias };
    }
    return null;
  }
  function afterward(i, unit, z) { // what the next operations make of this value
    let s = "", v = z;
    for (let k = i + 1; k < L.length && k <= i + 2; k++) {
      const sp = L[k].spec;
      if (sp.type === "act") {
        const out = acts[k][unit];
        s += `<p class="eq">then ${L[k].label}: ${ACT_TEXT[sp.fn] || sp.fn} with z = ${fmt(v)} → ${num(out, "u-act")}</p>`;
        break;
      } else if (sp.type === "batchnorm") {
        const ch = L[k].shape.length === 3 ? Math.floor(unit / (L[k].shape[1] * L[k].shape[2])) : unit;
        if (!L[k].P) break;
        const [a, b] = bnCoef(sp, L[k].P, ch);
        v = acts[k][unit];
        s += `<p class="eq">then batch norm: (z − ${fmt(L[k].P.running_mean.data[ch])}) × ${fmt(a)} + ${fmt(b)} → ${num(v, "u-bn")}</p>`;
      } else break;
    }
    return s;
  }
  async function select(layer, unit) {
    selected = { layer, unit };
    const mine = ++seq, box = $("unit"), l = L[layer], sp = l.spec, x = inAct(layer), out = acts[layer];
    const [c, h, w] = dims(inShape(layer));
    let html = "";
    const pos = l.shape.length === 3 ? (() => { const [, oh, ow] = l.shape; const ch = Math.floor(unit / (oh * ow)), r = unit % (oh * ow); return [ch, Math.floor(r / ow), r % ow]; })() : [unit];
    const where = l.shape.length === 3 ? `channel ${pos[0]}, row ${pos[1]}, column ${pos[2]}` : `unit ${unit}`;
    box.dataset.layer = layer; box.dataset.unit = unit; box.dataset.type = sp.type;
    html += `<p><b>${layer + 1}. ${l.label}</b> — ${where}. Output ${num(out[unit], "u-out")}</p>`;
    try {
      if (sp.type === "conv2d") {
        const [o, y, xx] = pos, W = await unitWeights(layer, o);
        if (mine !== seq) return;
        if (!W) throw new Error("the kernels of this layer are too large for the static page: run `cnnlab serve RUN` and open /explore");
        const [kh, kw] = sp.kernel, cpg = c / sp.groups, c0 = Math.floor(o / (l.shape[0] / sp.groups)) * cpg;
        const rows = [];
        let total = 0;
        for (let ci = 0; ci < cpg; ci++) {
          const patch = [], pads = [], k = [], prod = [];
          let part = 0;
          for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
            const iy = y * sp.stride[0] - sp.padding[0] + ky * sp.dilation[0], ix = xx * sp.stride[1] - sp.padding[1] + kx * sp.dilation[1];
            const inside = iy >= 0 && iy < h && ix >= 0 && ix < w, v = inside ? x[((c0 + ci) * h + iy) * w + ix] : 0;
            const kv = W.w[(ci * kh + ky) * kw + kx];
            patch.push(v); pads.push(!inside); k.push(kv); prod.push(kv * v); part += kv * v;
          }
          total += part;
          rows.push({ ci: c0 + ci, patch, pads, k, prod, part });
        }
        const shown = rows.slice().sort((a, b) => Math.abs(b.part) - Math.abs(a.part)).slice(0, 8);
        html += `<p class="hint">z = Σ (kernel × input patch) + bias, over ${cpg} input channel${cpg > 1 ? "s" : ""} × ${kh}×${kw}. Grey cells lie in the zero padding.</p>`;
        for (const r of shown) {
          html += `<div class="chan" data-ci="${r.ci}">` + gridTable(`input channel ${r.ci}: patch`, r.patch, kh, kw, "x", r.pads)
            + gridTable("kernel", r.k, kh, kw, "k") + gridTable("products", r.prod, kh, kw, "prod")
            + `<p class="eq">Σ products = ${num(r.part, "", "part")}</p></div>`;
        }
        if (rows.length > shown.length) {
          const rest = rows.filter((r) => !shown.includes(r)).reduce((a, r) => a + r.part, 0);
          html += `<p class="note">… and ${rows.length - shown.length} more input channels, contributing ${fmt(rest)} together (the 8 largest are shown).</p>`;
        }
        html += `<p class="eq">Σ = ${num(total, "u-sum")} &nbsp; + bias ${num(W.bias, "u-bias")} &nbsp; = z = <b>${num(total + W.bias, "u-z")}</b></p>`;
        html += afterward(layer, unit, total + W.bias);
      } else if (sp.type === "linear") {
        let items = null, bias = null, total = null;
        const W = await unitWeights(layer, unit);
        if (mine !== seq) return;
        if (W) {
          items = Array.from(x, (v, i) => ({ i, w: W.w[i], x: v, p: W.w[i] * v }));
          total = items.reduce((a, it) => a + it.p, 0);
          bias = W.bias;
        } else if (fcTop[layer]) {
          const t = fcTop[layer], k = t.k;
          items = Array.from({ length: k }, (_, q) => ({ i: t.index[unit * k + q], w: t.product[unit * k + q] / x[t.index[unit * k + q]], x: x[t.index[unit * k + q]], p: t.product[unit * k + q] }));
        } else throw new Error("this layer's weights are not in the static page: run `cnnlab serve RUN` and open /explore");
        items.sort((a, b) => Math.abs(b.p) - Math.abs(a.p));
        const top = items.slice(0, 12);
        html += `<p class="hint">z = Σ<sub>i</sub> w<sub>i</sub>·x<sub>i</sub> + bias over ${sp.in} inputs; the ${top.length} largest contributions:</p>`;
        html += `<table id="contribs"><tr><th>input i</th><th>w<sub>i</sub></th><th>x<sub>i</sub></th><th>w<sub>i</sub>·x<sub>i</sub></th></tr>`;
        for (const it of top) html += `<tr class="contrib" data-i="${it.i}" data-w="${it.w}" data-x="${it.x}" data-prod="${it.p}"><td>${it.i}</td><td>${fmt(it.w)}</td><td>${fmt(it.x)}</td><td>${fmt(it.p)}</td></tr>`;
        html += "</table>";
        if (total !== null) {
          const rest = total - top.reduce((a, it) => a + it.p, 0);
          html += `<p class="eq">the other ${items.length - top.length} inputs add ${fmt(rest)}</p>`;
          html += `<p class="eq">Σ = ${num(total, "u-sum")} &nbsp; + bias ${num(bias, "u-bias")} &nbsp; = z = <b>${num(total + bias, "u-z")}</b></p>`;
        } else html += `<p class="note">(precomputed: the 8 largest contributions; serve the run for the whole sum)</p>`;
        html += afterward(layer, unit, out[unit]);
        if (layer === L.length - 1) html += `<p class="eq">this is the logit of “${esc(B.classes[unit])}”; softmax turns it into p = ${num(probs()[unit], "u-prob")} (panel 4)</p>`;
      } else if (sp.type === "maxpool2d" || sp.type === "avgpool2d") {
        const [ch, y, xx] = pos, r = poolWindow(sp, x, [c, h, w], ch, y, xx), [kh, kw] = sp.kernel;
        html += gridTable(`input channel ${ch}: the ${kh}×${kw} window`, r.cells.map((q) => q.v), kh, kw, "x", r.cells.map((q) => q.pad), r.arg);
        html += sp.type === "maxpool2d" ? `<p class="eq">max = <b>${num(r.value, "u-z")}</b> (highlighted)</p>`
          : `<p class="eq">sum ${num(r.sum, "u-sum")} / ${r.div} = <b>${num(r.value, "u-z")}</b></p>`;
      } else if (sp.type === "act") {
        html += `<p class="eq">${ACT_TEXT[sp.fn] || sp.fn} with z = ${num(x[unit], "u-in")} → <b>${num(out[unit], "u-z")}</b></p>`;
      } else if (sp.type === "batchnorm" && l.P) {
        const ch = l.shape.length === 3 ? pos[0] : unit, [a, b] = bnCoef(sp, l.P, ch);
        html += `<p class="eq">(x − running mean) / √(running var + ε) · γ + β = (${num(x[unit], "u-in")} − ${fmt(l.P.running_mean.data[ch])}) × ${fmt(a)} + ${fmt(b)} = <b>${num(out[unit], "u-z")}</b></p>`;
      } else {
        html += `<p class="eq">input ${num(x[unit] === undefined ? NaN : x[unit], "u-in")} → ${num(out[unit], "u-z")}</p>`;
      }
    } catch (e) {
      html += `<p class="error">${esc(e.message)}</p>`;
    }
    if (mine !== seq) return;
    box.innerHTML = html;
    outline();
  }
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);

  // ---------------------------------------------------------------- softmax and attribution
  let logits = null;
  function probs() {
    const m = Math.max(...logits), e = logits.map((z) => Math.exp(z - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }
  function showSoftmax() {
    const m = Math.max(...logits), e = logits.map((z) => Math.exp(z - m)), s = e.reduce((a, b) => a + b, 0);
    const order = logits.map((_, k) => k).sort((a, b) => logits[b] - logits[a]).slice(0, 20);
    const tb = document.querySelector("#softmax tbody");
    tb.innerHTML = order.map((k, r) => `<tr class="prob-row${r === 0 ? " top" : ""}" data-class="${k}" data-logit="${logits[k]}" data-prob="${e[k] / s}"><td>${esc(B.classes[k])}${sampleIdx !== null && B.samples[sampleIdx].label === k ? " ✓" : ""}</td><td>${fmt(logits[k])}</td><td>${fmt(e[k])}</td><td>${(e[k] / s).toFixed(4)}</td><td><span class="bar" style="width:${Math.max(1, 80 * e[k] / s)}px"></span></td></tr>`).join("");
    $("softmax-sum").textContent = `Σ e^(z−max) = ${fmt(s)}` + (logits.length > 20 ? ` · the 20 largest of ${logits.length} classes` : "");
  }
  async function showAttribution() {
    const method = $("attr-method").value, k = +$("attr-class").value, cv = $("attr"), note = $("attr-note");
    const mine = ++attrSeq;
    let map = null, size = 0, how = "Captum, as cnnlab explain";
    note.textContent = "";
    if (!B.attribution_methods.length) { note.textContent = "attribution maps were left out of this page"; return; }
    if (sampleIdx !== null) {
      const a = B.samples[sampleIdx].attribution[method];
      if (a.error) { note.textContent = a.error; }
      else if (a.classes.includes(k)) {
        size = a.size;
        const j = a.classes.indexOf(k), all = bytes(a.maps);
        map = all.subarray(j * size * size, (j + 1) * size * size);
      } else note.textContent = "precomputed for the top-5 classes and the true class only";
    } else if (B.served && B.mode !== "weights") {
      try {
        const r = await fetch("/v1/explore/attribution", { method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ pixels: Array.from(inputU8), class: k, method }) });
        const j = await r.json();
        if (!r.ok) throw new Error(j.error || r.statusText);
        if (j.error) throw new Error(j.error);
        size = j.size; map = bytes(j.maps);
      } catch (e) { note.textContent = "error: " + e.message; }
    } else if (B.mode === "weights") {
      try {
        const f = attributionJS(k, method);
        X.attrMap = Array.from(f);
        how = "computed in this page, as Captum does for cnnlab explain";
        size = S; map = Uint8Array.from(f, (v) => Math.round(255 * v));
      } catch (e) { note.textContent = e.message; }
    } else note.textContent = "For a drawn or uploaded image the maps come from the server: run `cnnlab serve RUN` and open /explore. Pick a test image to see its precomputed maps.";
    if (mine !== attrSeq) return;
    drawOverlay(cv, map, size);
    if (map) note.textContent = `${method === "gradcam" ? "Grad-CAM on the last conv layer" : "saliency |∂ logit / ∂ pixel|"} for “${B.classes[k]}” (${how})`;
  }
  let attrSeq = 0;
  function drawOverlay(cv, map, size) {
    const small = document.createElement("canvas");
    small.width = small.height = S;
    const sc = small.getContext("2d"), img = sc.createImageData(S, S);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const o = 4 * (y * S + x);
      let g = 0;
      for (let ch = 0; ch < C; ch++) g += inputU8[(ch * S + y) * S + x] / C;
      g *= 0.4;
      const hv = map ? map[Math.min(size - 1, Math.floor((y * size) / S)) * size + Math.min(size - 1, Math.floor((x * size) / S))] / 255 : 0;
      img.data[o] = Math.min(255, g + 255 * hv); img.data[o + 1] = Math.min(255, g + 90 * hv * hv); img.data[o + 2] = g; img.data[o + 3] = 255;
    }
    sc.putImageData(img, 0, 0);
    const ctx = cv.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, cv.width, cv.height);
  }

  // ---------------------------------------------------------------- filters and the epoch slider
  const firstConv = () => L.findIndex((l) => l.spec.type === "conv2d");
  function paintFilters(P) {
    const i = firstConv(), cv = $("filters");
    if (i < 0 || !P || !P.weight) { cv.width = cv.height = 1; return; }
    const [o, ci, kh, kw] = P.weight.shape, W = P.weight.data, scale = Math.max(3, Math.floor(36 / kh)), gap = 4;
    const cols = Math.min(o, 16), tw = kw * scale + gap, th = kh * scale + gap;
    cv.width = cols * tw; cv.height = Math.ceil(o / cols) * th;
    const ctx = cv.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, cv.width, cv.height);
    for (let f = 0; f < o; f++) {
      let m = 0;
      for (let q = 0; q < ci * kh * kw; q++) m = Math.max(m, Math.abs(W[f * ci * kh * kw + q]));
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
        let rgb;
        if (ci === 3) rgb = [0, 1, 2].map((c) => 127.5 + 127.5 * (m ? W[((f * 3 + c) * kh + y) * kw + x] / m : 0));
        else { let v = 0; for (let c = 0; c < ci; c++) v += W[((f * ci + c) * kh + y) * kw + x] / ci; rgb = color(v, m); }
        ctx.fillStyle = `rgb(${rgb.map(Math.round).join(",")})`;
        ctx.fillRect((f % cols) * tw + x * scale, Math.floor(f / cols) * th + y * scale, scale, scale);
      }
    }
  }
  function epochView() {
    const snaps = B.snapshots, el = $("epoch"), k = +el.value, box = $("epoch-maps");
    const last = k >= snaps.length, params = last ? null : decodedSnap(k);
    const i = firstConv();
    paintFilters(last ? L[i] && L[i].P : params[L[i].name]);
    $("epoch-label").textContent = last ? "the trained model (checkpoint)" : `after epoch ${snaps[k].epoch}` + (snaps[k].test_acc != null ? ` · test accuracy ${(100 * snaps[k].test_acc).toFixed(1)}%` : "");
    // the first layers' outputs for this input, recomputed with that epoch's weights
    let n = 0;
    const src = last ? null : params;
    while (n < L.length && n < 8) { // up to the first operation whose weights the snapshot lacks
      const l = L[n], t = l.spec.type;
      if (t === "opaque" || t === "flatten" || t === "linear") break;
      if (["conv2d", "batchnorm"].includes(t) && !(last ? l.P : src[l.name])) break;
      n++;
    }
    box.innerHTML = "";
    if (!input || n === 0) return;
    let outs;
    try { outs = forward(input, n, src); } catch (e) { return; }
    X.epochActs = outs;
    outs.forEach((a, j) => {
      const div = document.createElement("div");
      div.className = "layer";
      div.innerHTML = `<div class="name"></div>`;
      div.firstChild.textContent = `${j + 1}. ${L[j].label}`;
      const cv = document.createElement("canvas");
      div.appendChild(cv);
      box.appendChild(div);
      paint(cv, a, L[j].shape, false);
    });
  }
  const snapCache = {};
  function decodedSnap(k) {
    if (!snapCache[k]) snapCache[k] = Object.fromEntries(Object.entries(B.snapshots[k].params).map(([op, p]) => [op, decodeParams(p)]));
    return snapCache[k];
  }

  // ---------------------------------------------------------------- inputs
  const pad = $("pad"), pctx = pad.getContext("2d");
  const small = document.createElement("canvas");
  let drawing = false, lastPt = null, pending = false, tEvent = 0;
  function clearPad() {
    pctx.fillStyle = B && !B.light_on_dark ? "#fff" : "#000";
    pctx.fillRect(0, 0, pad.width, pad.height);
  }
  function padPixels() { // the pad, scaled to the model's input as a browser scales images
    small.width = small.height = S;
    const sc = small.getContext("2d");
    sc.imageSmoothingEnabled = true; sc.imageSmoothingQuality = "high";
    sc.drawImage(pad, 0, 0, S, S);
    const d = sc.getImageData(0, 0, S, S).data, u = new Uint8Array(C * S * S);
    for (let i = 0; i < S * S; i++) {
      if (C === 1) u[i] = Math.round(0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2]);
      else for (let ch = 0; ch < C; ch++) u[ch * S * S + i] = d[4 * i + Math.min(ch, 2)];
    }
    return u;
  }
  function normalise(u) {
    const x = new Float32Array(u.length), { mean, std } = B.input;
    for (let ch = 0; ch < C; ch++) for (let i = 0; i < S * S; i++) {
      const q = ch * S * S + i;
      x[q] = (u[q] / 255 - mean[ch]) / std[ch];
    }
    return x;
  }
  async function setInput(u, sample) {
    const t0 = performance.now();
    inputU8 = u; input = normalise(u); sampleIdx = sample;
    document.querySelectorAll("#samples figure").forEach((f, i) => f.classList.toggle("on", i === sample));
    $("input-note").textContent = sample !== null ? `test image #${B.samples[sample].index}, true label: ${B.classes[B.samples[sample].label]}` : "your drawing, scaled to " + S + "×" + S;
    if (B.mode === "weights") {
      acts = forward(input);
    } else if (sample !== null && B.samples[sample].activations) {
      const a = B.samples[sample].activations;
      acts = a.outputs.map((o) => f16(bytes(o)));
      fcTop = decodeTop(a.fc_top);
    } else if (B.served) {
      const mine = ++traceSeq;
      const r = await fetch("/v1/explore/trace", { method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ pixels: Array.from(u) }) });
      const j = await r.json();
      if (mine !== traceSeq) return;
      if (!r.ok) { $("input-note").textContent = "error: " + (j.error || r.statusText); return; }
      acts = j.outputs.map((o) => f16(bytes(o)));
      fcTop = decodeTop(j.fc_top);
    } else return;
    logits = Array.from(acts[acts.length - 1]);
    paintLayers();
    showSoftmax();
    if (selected) await select(selected.layer, selected.unit);
    if ($("attr-class").dataset.user !== "1") $("attr-class").value = String(logits.indexOf(Math.max(...logits)));
    showAttribution();
    if (B.snapshots.length) epochView();
    X.computeMs.push(performance.now() - t0); // forward, grids, softmax, attribution, epoch view
    X.input = Array.from(input); X.pixels = Array.from(inputU8); X.acts = acts; X.logits = logits; X.sample = sample;
    X.updates = (X.updates || 0) + 1;
  }
  let traceSeq = 0;
  function decodeTop(t) {
    const out = {};
    for (const [i, v] of Object.entries(t || {})) out[i] = { k: v.k, index: new Int32Array(bytes(v.index).buffer), product: new Float32Array(bytes(v.product).buffer) };
    return out;
  }
  function update() { // after a stroke: recompute at the next frame, once per frame
    if (pending) return;
    pending = true;
    requestAnimationFrame(async () => {
      pending = false;
      const t = tEvent;
      await setInput(padPixels(), null);
      requestAnimationFrame(() => X.latencies.push(performance.now() - t)); // to the next painted frame
    });
  }
  function pos(ev) {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }
  function stroke(a, b) {
    pctx.strokeStyle = B.light_on_dark ? "#fff" : "#000";
    pctx.lineWidth = +$("brush").value; pctx.lineCap = "round"; pctx.lineJoin = "round";
    pctx.beginPath(); pctx.moveTo(a[0], a[1]); pctx.lineTo(b[0], b[1]); pctx.stroke();
  }
  const drawable = () => B.mode === "weights" || B.served;
  pad.addEventListener("pointerdown", (ev) => {
    if (!B || !drawable()) return;
    if (sampleIdx !== null) clearPad();
    drawing = true; lastPt = pos(ev); stroke(lastPt, lastPt);
    pad.setPointerCapture(ev.pointerId);
    tEvent = performance.now(); update();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const p = pos(ev); stroke(lastPt, p); lastPt = p;
    tEvent = performance.now(); update();
  });
  const stop = () => { drawing = false; };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);
  $("clear").addEventListener("click", () => { clearPad(); if (drawable()) { tEvent = performance.now(); update(); } });
  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (!f || !drawable()) return;
    const img = new Image();
    img.onload = () => {
      clearPad();
      const s = Math.min(pad.width / img.width, pad.height / img.height), w = img.width * s, h = img.height * s;
      pctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      URL.revokeObjectURL(img.src);
      tEvent = performance.now(); update();
    };
    img.onerror = () => { $("input-note").textContent = "could not read that image"; };
    img.src = URL.createObjectURL(f);
  });
  function pickSample(k) {
    const sm = B.samples[k], u = bytes(sm.pixels);
    // show it on the pad too (drawing over it starts a fresh drawing)
    small.width = small.height = S;
    const sc = small.getContext("2d"), img = sc.createImageData(S, S);
    for (let i = 0; i < S * S; i++) {
      for (let ch = 0; ch < 3; ch++) img.data[4 * i + ch] = u[(C === 1 ? 0 : ch) * S * S + i];
      img.data[4 * i + 3] = 255;
    }
    sc.putImageData(img, 0, 0);
    pctx.imageSmoothingEnabled = false;
    pctx.drawImage(small, 0, 0, pad.width, pad.height);
    return setInput(u, k);
  }
  X.pick = pickSample;
  X.setPixels = (arr) => setInput(Uint8Array.from(arr), null);
  X.select = select;
  X.unitCenter = (layer, unit) => { // page coordinates of a unit's cell, for tests
    const v = views[layer + 1], [x, y, w, h] = unitRect(v.g, unit), r = v.canvas.getBoundingClientRect();
    return [r.left + (x + w / 2) * r.width / v.canvas.width, r.top + (y + h / 2) * r.height / v.canvas.height];
  };

  // ---------------------------------------------------------------- start
  function start(bundle) {
    B = X.bundle = bundle;
    C = B.input.channels; S = B.input.size;
    L = B.layers.map((l) => ({ ...l, P: l.params ? decodeParams(l.params) : null }));
    const acc = B.test_acc != null ? ` · test accuracy ${(100 * B.test_acc).toFixed(1)}%` : "";
    $("model-info").textContent = `${B.run} · ${B.model.name} · ${B.dataset} · ${B.classes.length} classes · input ${C}×${S}×${S} · ${B.parameters.toLocaleString("en")} parameters${acc} · ${{ weights: "the forward pass runs in this page", activations: "precomputed activations", server: "activations from the server" }[B.mode]}`;
    buildLayers();
    clearPad();
    if (!drawable()) $("draw-note").textContent = "This model is too large to run in a static page: pick a test image (precomputed), or run `cnnlab serve RUN` and open /explore to draw.";
    const sbox = $("samples");
    B.samples.forEach((sm, k) => {
      const fig = document.createElement("figure"), cv = document.createElement("canvas"), cap = document.createElement("figcaption");
      cv.width = cv.height = S;
      const u = bytes(sm.pixels), ctx = cv.getContext("2d"), img = ctx.createImageData(S, S);
      for (let i = 0; i < S * S; i++) { for (let ch = 0; ch < 3; ch++) img.data[4 * i + ch] = u[(C === 1 ? 0 : ch) * S * S + i]; img.data[4 * i + 3] = 255; }
      ctx.putImageData(img, 0, 0);
      cap.textContent = B.classes[sm.label];
      fig.title = `test image #${sm.index}: ${B.classes[sm.label]}`;
      fig.dataset.sample = k;
      fig.append(cv, cap);
      fig.addEventListener("click", () => pickSample(k));
      sbox.appendChild(fig);
    });
    $("samples-note").textContent = B.samples.length ? "" : B.samples_note || "no test images in this page";
    const ms = $("attr-method");
    ms.hidden = $("attr-class").hidden = !B.attribution_methods.length;
    ms.innerHTML = B.attribution_methods.map((m) => `<option value="${m}">${m === "gradcam" ? "Grad-CAM" : "saliency"}</option>`).join("");
    const cs = $("attr-class");
    cs.innerHTML = B.classes.map((c, k) => `<option value="${k}">${esc(c)}</option>`).join("");
    cs.addEventListener("change", () => { cs.dataset.user = "1"; showAttribution(); });
    ms.addEventListener("change", showAttribution);
    const ep = $("epoch");
    if (B.snapshots.length) {
      ep.max = String(B.snapshots.length);
      ep.value = ep.max;
      ep.addEventListener("input", epochView);
      $("epoch-note").textContent = `${B.snapshots.length} snapshots of the first layers, one per epoch. Move the slider: the filters, and this input's first feature maps recomputed with that epoch's weights.`;
    } else {
      $("epoch-controls").hidden = true;
      $("epoch-note").textContent = "This run kept no weight snapshots (runs trained before snapshots, or with train.snapshots=false), so there is no epoch slider; the filters are the trained ones.";
    }
    const i = firstConv();
    paintFilters(i >= 0 ? L[i].P : null);
    const first = B.samples.length ? pickSample(0) : drawable() ? setInput(padPixels(), null) : Promise.resolve();
    first.then(() => { X.ready = true; document.body.dataset.ready = "1"; });
  }
  if (window.EXPLORE_BUNDLE) start(window.EXPLORE_BUNDLE);
  else fetch("/v1/explore/bundle", { headers: auth }).then(async (r) => {
    const j = await r.json();
    if (!r.ok) throw new Error((j.error || r.statusText) + (apiKey ? "" : " (open this page as /explore#key=<your key>)"));
    start(j);
  }).catch((e) => { $("model-info").textContent = "cannot load the model: " + e.message; });
})();
