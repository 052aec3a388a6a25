// cnnlab drawing page: no dependencies. Draw → debounced POST /v1/saliency (or /v1/predict
// when the backend has no gradients) → top-3, all-class table and a heat-map.
"use strict";
(() => {
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const heat = document.getElementById("heat");
  const hctx = heat.getContext("2d");
  const statusEl = document.getElementById("status");
  // a server started with --api-key: open the page as /#key=<key> (kept in this browser)
  const hashKey = new URLSearchParams(location.hash.slice(1)).get("key");
  if (hashKey) { localStorage.setItem("cnnlab-key", hashKey); history.replaceState(null, "", location.pathname); }
  const apiKey = hashKey || localStorage.getItem("cnnlab-key");
  const auth = apiKey ? { authorization: "Bearer " + apiKey } : {};
  let model = null;
  let drawing = false;
  let last = null;
  let timer = null;
  let seq = 0;

  function clearPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    hctx.fillStyle = "#000";
    hctx.fillRect(0, 0, heat.width, heat.height);
    document.getElementById("top3").innerHTML = "";
    document.querySelector("#all tbody").innerHTML = "";
    document.getElementById("ood").textContent = "";
    setStatus("");
  }

  function setStatus(msg, error) {
    statusEl.textContent = msg;
    statusEl.className = "status" + (error ? " error" : "");
  }

  function pos(ev) {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * pad.width / r.width, (ev.clientY - r.top) * pad.height / r.height];
  }

  function stroke(a, b) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = +document.getElementById("brush").value;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (ev) => {
    drawing = true;
    last = pos(ev);
    stroke(last, last);
    pad.setPointerCapture(ev.pointerId);
    schedule();
  });
  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    const p = pos(ev);
    stroke(last, p);
    last = p;
    schedule();
  });
  const stop = () => { if (drawing) { drawing = false; schedule(0); } };
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);

  document.getElementById("clear").addEventListener("click", clearPad);
  document.getElementById("file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    const img = new Image();
    img.onload = () => {
      clearPad();
      const s = Math.min(pad.width / img.width, pad.height / img.height);
      const w = img.width * s, h = img.height * s;
      ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      URL.revokeObjectURL(img.src);
      schedule(0);
    };
    img.onerror = () => setStatus("could not read that image", true);
    img.src = URL.createObjectURL(f);
  });

  // Live while drawing: at most one request per 150 ms during a stroke (throttle), plus a
  // trailing one 120 ms after the last change (debounce) so the final drawing is classified.
  let lastSent = 0;
  function schedule(delay) {
    clearTimeout(timer);
    const now = performance.now();
    if (delay === undefined && drawing && now - lastSent > 150) {
      lastSent = now;
      classify();
    }
    timer = setTimeout(() => { lastSent = performance.now(); classify(); }, delay === undefined ? 120 : delay);
  }

  async function classify() {
    if (!model) return;
    const mine = ++seq;
    const body = JSON.stringify({ images: [pad.toDataURL("image/png")], top_k: model.classes.length });
    const url = model.saliency ? "/v1/saliency" : "/v1/predict";
    const t0 = performance.now();
    let res;
    try {
      const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
      res = await r.json();
      if (!r.ok) throw new Error(res.error || r.statusText);
    } catch (e) {
      setStatus("error: " + e.message, true);
      return;
    }
    if (mine !== seq) return; // a newer stroke already asked
    const pred = res.prediction || res.predictions[0];
    show(pred);
    if (res.saliency) drawHeat(res.saliency);
    setStatus(`${Math.round(performance.now() - t0)} ms · ${model.backend} backend`);
  }

  function show(pred) {
    const top = document.getElementById("top3");
    top.innerHTML = "";
    pred.top.slice(0, 3).forEach((t) => {
      const li = document.createElement("li");
      li.className = "pred";
      li.dataset.prob = t.probability;
      li.textContent = `${t.class} — ${(100 * t.probability).toFixed(1)}%`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.max(1, 120 * t.probability)}px`;
      li.appendChild(bar);
      top.appendChild(li);
    });
    const tb = document.querySelector("#all tbody");
    tb.innerHTML = "";
    pred.top.forEach((t) => {
      const tr = document.createElement("tr");
      tr.className = "prob-row";
      tr.dataset.prob = t.probability;
      tr.innerHTML = `<td></td><td class="p">${t.probability.toFixed(4)}</td>`;
      tr.firstChild.textContent = t.class;
      tb.appendChild(tr);
    });
    const o = document.getElementById("ood");
    if (pred.ood) {
      o.textContent = pred.ood.flag
        ? `Out of distribution? (${pred.ood.method} score ${pred.ood.score.toFixed(2)} < ${pred.ood.threshold.toFixed(2)})`
        : `In distribution (${pred.ood.method} score ${pred.ood.score.toFixed(2)})`;
      o.className = pred.ood.flag ? "ood-flag" : "";
    } else {
      o.textContent = "";
    }
  }

  function drawHeat(sal) {
    // the input, downscaled to the model's size, in gray; the saliency in red on top
    const n = sal.length;
    const small = document.createElement("canvas");
    small.width = small.height = n;
    const sctx = small.getContext("2d");
    sctx.drawImage(pad, 0, 0, n, n);
    const img = sctx.getImageData(0, 0, n, n);
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const i = 4 * (y * n + x);
        const g = 0.35 * img.data[i];
        const s = sal[y][x];
        img.data[i] = Math.min(255, g + 255 * s);
        img.data[i + 1] = Math.min(255, g + 80 * s * s);
        img.data[i + 2] = g;
        img.data[i + 3] = 255;
      }
    }
    sctx.putImageData(img, 0, 0);
    hctx.imageSmoothingEnabled = false;
    hctx.drawImage(small, 0, 0, heat.width, heat.height);
  }

  fetch("/v1/model", { headers: auth }).then((r) => r.json()).then((m) => {
    if (m.error) throw new Error(m.error + (apiKey ? "" : " (open this page as /#key=<your key>)"));
    model = m;
    const inp = m.serving.decoded_to;  // C, S, S for every export kind (uint8 graphs too)
    document.getElementById("model-info").textContent =
      `${m.model.name} · ${m.dataset} · ${m.classes.length} classes · input ${inp[0]}×${inp[1]}×${inp[2]} · ${m.backend}`;
    if (!m.saliency) document.getElementById("heat-note").textContent = "Saliency needs the torch backend (this server runs ONNX).";
    document.body.dataset.ready = "1";
  }).catch((e) => setStatus("cannot reach the server: " + e.message, true));
  clearPad();
})();
