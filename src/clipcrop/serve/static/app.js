// ClipCrop web page: plain JS, no build step, no third-party code.
// Builds its form from the server's limits (GET /v1/info), posts it to /v1/crop (one or several
// aspect ratios, an exact size, faces, a text to leave out), draws the ranked crops on the image
// with the priors the ranking used (dashed keep / avoid / face boxes; no label covers another)
// and cuts them client-side (canvas) from the uploaded file, grouped by ratio, for download.
"use strict";

(function () {
  const COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"];
  const KEY_STORAGE = "clipcrop-api-key";
  const ASPECT_LABELS = {
    "1:1": "square",
    "4:5": "portrait",
    "2:3": "portrait photo",
    "3:4": "portrait",
    "4:3": "classic",
    "3:2": "photo",
    "16:9": "wide",
    "9:16": "story",
  };
  const RATIO = /^\s*(\d+(?:\.\d+)?)\s*[:/x]\s*(\d+(?:\.\d+)?)\s*$/i;

  const $ = (id) => document.getElementById(id);
  const form = $("crop-form");
  const imageInput = $("image");
  const queryInput = $("query");
  const queryImageInput = $("image-query");
  const topKInput = $("top-k");
  const presetsEl = $("aspect-presets");
  const aspectCustom = $("aspect-custom");
  const sizeInput = $("size");
  const upscaleInput = $("upscale");
  const facesInput = $("faces");
  const facesHint = $("faces-hint");
  const avoidInput = $("avoid");
  const legend = $("legend");
  const topKHint = $("top-k-hint");
  const clearQueryImage = $("clear-image-query");
  const imageQueryNote = $("image-query-note");
  const resultQuery = $("result-query");
  const resultQueryText = $("result-query-text");
  const resultQueryImage = $("result-query-image");
  const keyBox = $("key-box");
  const keyInput = $("api-key");
  const button = $("crop-button");
  const statusEl = $("status");
  const errorEl = $("error");
  const stage = $("stage");
  const preview = $("preview");
  const boxesEl = $("boxes");
  const thumbs = $("thumbs");
  const placeholder = $("placeholder");
  const dropZone = $("drop-zone");

  let imageUrl = null; // object URL of the uploaded image
  let thumbUrls = []; // object URLs of the cut crops
  let queryImageUrl = null; // object URL of the query image shown with the result
  let lastResult = null; // the result drawn now (labels are placed again when the image resizes)
  // the server's limits (GET /v1/info); these defaults hold until it answers
  const limits = { max_top_k: 90, default_top_k: 5, max_upload_bytes: 25 * 1024 * 1024, max_query_chars: 512, max_output_side: 16384 };
  const SIZE = /^\s*(\d+)\s*[x×]\s*(\d+)\s*$/i;

  function readKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      /* storage disabled: the key lives in the field only */
    }
  }

  function showError(message) {
    errorEl.textContent = message; // textContent: server messages may echo file names
  }

  function clearError() {
    errorEl.textContent = "";
  }

  function setStatus(text) {
    statusEl.textContent = text;
  }

  function clearResults() {
    lastResult = null;
    resultQuery.hidden = true;
    legend.hidden = true;
    if (queryImageUrl) URL.revokeObjectURL(queryImageUrl);
    queryImageUrl = null;
    boxesEl.replaceChildren();
    thumbs.replaceChildren();
    thumbUrls.forEach((u) => URL.revokeObjectURL(u));
    thumbUrls = [];
  }

  function showPreview(file) {
    clearResults();
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = null;
    if (!file) {
      stage.hidden = true;
      placeholder.hidden = false;
      return;
    }
    imageUrl = URL.createObjectURL(file);
    preview.src = imageUrl;
    stage.hidden = false;
    placeholder.hidden = true;
  }

  preview.addEventListener("error", () => {
    // the browser cannot show it; the service will say why when Crop is pressed
    stage.hidden = true;
    placeholder.hidden = false;
  });

  imageInput.addEventListener("change", () => {
    clearError();
    setStatus("");
    showPreview(imageInput.files[0] || null);
  });

  // a text query and a query image exclude each other: choosing an image clears and locks the
  // text field (Clear unlocks it); typing a query locks the image picker
  function syncCondition() {
    const hasImage = queryImageInput.files.length > 0;
    const hasText = queryInput.value.trim() !== "";
    queryInput.disabled = hasImage;
    queryImageInput.disabled = hasText && !hasImage;
    clearQueryImage.disabled = !hasImage;
    imageQueryNote.hidden = !hasImage;
  }

  queryInput.addEventListener("input", syncCondition);
  queryImageInput.addEventListener("change", () => {
    if (queryImageInput.files.length > 0) queryInput.value = "";
    syncCondition();
  });
  clearQueryImage.addEventListener("click", () => {
    queryImageInput.value = "";
    syncCondition();
    queryInput.focus();
  });

  function presetBox(ratio, checked) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "aspect";
    box.value = ratio;
    box.checked = checked;
    label.append(box, " " + ratio + (ASPECT_LABELS[ratio] ? " " + ASPECT_LABELS[ratio] : ""));
    return label;
  }

  function checkedPresets() {
    return Array.from(presetsEl.querySelectorAll("input[name=aspect]:checked")).map((b) => b.value);
  }

  function applyInfo(info) {
    Object.assign(limits, info);
    topKInput.max = String(info.max_top_k);
    topKHint.textContent = "1 to " + info.max_top_k;
    const k = Number(topKInput.value);
    if (!Number.isInteger(k) || k < 1 || k > info.max_top_k) topKInput.value = String(info.default_top_k);
    queryInput.maxLength = info.max_query_chars;
    if (info.media_types && info.media_types.length) {
      imageInput.accept = info.media_types.join(",");
      queryImageInput.accept = imageInput.accept;
    }
    if (info.aspect_presets && info.aspect_presets.length) {
      const chosen = new Set(checkedPresets());
      presetsEl.replaceChildren(...info.aspect_presets.map((r) => presetBox(r, chosen.has(r))));
    }
    if (info.faces === false) {
      // the server has no face detector: say so rather than send a request it refuses
      facesInput.checked = false;
      facesInput.disabled = true;
      facesHint.hidden = false;
    }
  }

  async function loadInfo(triesLeft) {
    // 503 while the model loads: ask again; anything else keeps the defaults (the server still checks)
    try {
      const response = await fetch("/v1/info");
      if (response.ok) {
        applyInfo(await response.json());
        document.body.dataset.info = "loaded";
        return;
      }
      if (response.status === 503 && triesLeft > 0) {
        setTimeout(() => loadInfo(triesLeft - 1), 2000);
        return;
      }
    } catch (e) {
      /* unreachable: the submit reports it */
    }
    document.body.dataset.info = "defaults";
  }

  // drag and drop onto the image zone
  ["dragenter", "dragover"].forEach((type) =>
    dropZone.addEventListener(type, (e) => {
      e.preventDefault();
      dropZone.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"))
  );
  dropZone.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = e.dataTransfer && e.dataTransfer.files;
    if (files && files.length) {
      imageInput.files = files;
      imageInput.dispatchEvent(new Event("change"));
    }
  });

  function waitForImage(img) {
    if (img.complete && img.naturalWidth) return Promise.resolve(true);
    return new Promise((resolve) => {
      img.addEventListener("load", () => resolve(true), { once: true });
      img.addEventListener("error", () => resolve(false), { once: true });
    });
  }

  function stem(name) {
    const base = (name || "image").split(/[\\/]/).pop();
    const dot = base.lastIndexOf(".");
    return (dot > 0 ? base.slice(0, dot) : base).replace(/[^\w.-]+/g, "_") || "image";
  }

  function overlaps(a, b) {
    return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
  }

  // Where each box's label goes, in the order given (rank labels best first, then the priors'):
  // the first spot that covers no label placed already, trying the box's corners inside, then
  // outside, then along its edges, then the nearest free cell of the whole image; every spot
  // stays inside the image. Items are {x0, y0, x1, y1, w, h}: the box and its label's size, in
  // pixels of the image as shown (W x H).
  function placeLabels(items, W, H) {
    const placed = [];
    for (const b of items) {
      const { w, h } = b;
      const clamp = (x, y) => ({ x: Math.min(Math.max(x, 0), Math.max(W - w, 0)), y: Math.min(Math.max(y, 0), Math.max(H - h, 0)), w, h });
      const spots = [
        [b.x0, b.y0], [b.x1 - w, b.y0], [b.x0, b.y1 - h], [b.x1 - w, b.y1 - h],
        [b.x0, b.y0 - h], [b.x1 - w, b.y0 - h], [b.x0, b.y1], [b.x1 - w, b.y1],
        [b.x0 - w, b.y0], [b.x1, b.y0], [b.x0 - w, b.y1 - h], [b.x1, b.y1 - h],
      ];
      for (let x = b.x0 + w; x < b.x1 - w; x += w) spots.push([x, b.y0], [x, b.y1 - h]);
      for (let y = b.y0 + h; y < b.y1 - h; y += h) spots.push([b.x0, y], [b.x1 - w, y]);
      const grid = [];
      for (let y = 0; y + h <= H; y += h) for (let x = 0; x + w <= W; x += w) grid.push([x, y]);
      grid.sort((p, q) => Math.hypot(p[0] - b.x0, p[1] - b.y0) - Math.hypot(q[0] - b.x0, q[1] - b.y0));
      // next to the labels placed already: free room a grid of this label's size can miss
      for (const p of placed) spots.push([p.x + p.w, p.y], [p.x, p.y + p.h], [p.x - w, p.y], [p.x, p.y - h]);
      let spot = null;
      for (const [x, y] of spots.concat(grid)) {
        const r = clamp(x, y);
        if (!placed.some((p) => overlaps(p, r))) {
          spot = r;
          break;
        }
      }
      placed.push(spot || clamp(b.x0, b.y0)); // more labels than the image holds: overlap the last
    }
    return placed;
  }

  function layoutLabels() {
    if (!lastResult) return;
    const W = boxesEl.clientWidth;
    const H = boxesEl.clientHeight;
    const priors = lastResult.priors || [];
    const labels = lastResult.crops.map((c, i) => $("rank-" + (i + 1))).concat(priors.map((p, i) => $("prior-label-" + (i + 1))));
    if (!W || !H || !labels.length || labels.some((l) => !l)) return;
    const sx = W / lastResult.width;
    const sy = H / lastResult.height;
    const boxes = lastResult.crops.map((c) => c.box).concat(priors.map((p) => p.box));
    const items = boxes.map((b, i) => ({
      x0: b[0] * sx, y0: b[1] * sy, x1: b[2] * sx, y1: b[3] * sy,
      w: labels[i].offsetWidth + 2, h: labels[i].offsetHeight + 2,
    }));
    placeLabels(items, W, H).forEach((r, i) => {
      labels[i].style.left = r.x + 1 + "px";
      labels[i].style.top = r.y + 1 + "px";
    });
  }

  // the ratio groups of a result, in its order: [{aspect, crops: [{crop, index, rank}]}]; index
  // is the crop's place in result.crops (its box and colour), rank its place in its group
  function groupsOf(result) {
    const groups = [];
    result.crops.forEach((crop, index) => {
      const aspect = crop.aspect === undefined ? null : crop.aspect;
      let group = groups.find((g) => g.aspect === aspect);
      if (!group) groups.push((group = { aspect, crops: [] }));
      group.crops.push({ crop, index, rank: group.crops.length + 1 });
    });
    return groups;
  }

  function priorText(prior) {
    return prior.kind + (prior.weight !== 1 ? " ×" + prior.weight : "");
  }

  if (window.ResizeObserver) new ResizeObserver(layoutLabels).observe(preview);

  function placeBox(el, box, W, H) {
    const [x0, y0, x1, y1] = box;
    el.style.left = (100 * x0) / W + "%";
    el.style.top = (100 * y0) / H + "%";
    el.style.width = (100 * (x1 - x0)) / W + "%";
    el.style.height = (100 * (y1 - y0)) / H + "%";
  }

  function drawBoxes(result) {
    const W = result.width;
    const H = result.height;
    lastResult = result;
    const groups = groupsOf(result);
    const labels = [];
    for (const group of groups) {
      for (const { crop, index: i, rank } of group.crops) {
        const box = document.createElement("div");
        box.className = "box";
        box.id = "box-" + (i + 1);
        box.style.setProperty("--c", COLORS[i % COLORS.length]);
        placeBox(box, crop.box, W, H);
        box.style.zIndex = String(result.crops.length - i);
        boxesEl.appendChild(box);
        const label = document.createElement("span");
        label.className = "rank";
        label.id = "rank-" + (i + 1);
        label.style.setProperty("--c", COLORS[i % COLORS.length]);
        // with several ratios a rank is within its ratio: "4:5 #1"
        label.textContent = groups.length > 1 ? (group.aspect || "free") + " #" + rank : String(rank);
        labels.push(label);
      }
    }
    (result.priors || []).forEach((prior, i) => {
      const box = document.createElement("div");
      box.className = "prior prior-" + prior.kind;
      box.id = "prior-" + (i + 1);
      placeBox(box, prior.box, W, H);
      boxesEl.appendChild(box);
      const label = document.createElement("span");
      label.className = "prior-label prior-" + prior.kind;
      label.id = "prior-label-" + (i + 1);
      label.textContent = priorText(prior);
      labels.push(label);
    });
    legend.hidden = !(result.priors && result.priors.length);
    labels.forEach((label) => boxesEl.appendChild(label)); // above every box
    layoutLabels();
  }

  function showQuery(result, queryImage, aspects) {
    // which request made these crops: the text, the query image, or neither
    let text;
    if (result.query) text = "Crops for “" + result.query + "”";
    else if (result.image_query) text = "Crops for the query image " + result.image_query;
    else text = "General aesthetic crops (no query)";
    const ratios = aspects.length ? " · aspect" + (aspects.length > 1 ? "s " : " ") + aspects.join(", ") : "";
    const faces = (result.priors || []).filter((p) => p.kind === "face").length;
    const found = facesInput.checked ? " · " + faces + " face" + (faces === 1 ? "" : "s") + " kept whole" : "";
    resultQueryText.textContent = text + ratios + found + " · " + result.mode + " mode";
    resultQueryImage.hidden = !queryImage;
    if (queryImage) {
      queryImageUrl = URL.createObjectURL(queryImage);
      resultQueryImage.src = queryImageUrl;
    }
    resultQuery.hidden = false;
  }

  function megabytes(n) {
    return (n / (1024 * 1024)).toFixed(1) + " MB";
  }

  // the checks the server would make anyway, made before uploading: the message comes at once
  function formProblem(file, queryImage) {
    const k = Number(topKInput.value);
    if (topKInput.value !== "" && (!Number.isInteger(k) || k < 1 || k > limits.max_top_k)) {
      return { field: topKInput, message: "Number of crops must be a whole number from 1 to " + limits.max_top_k + "." };
    }
    for (const [f, what] of [[file, "The image"], [queryImage, "The query image"]]) {
      if (f && f.size > limits.max_upload_bytes) {
        return {
          field: f === file ? imageInput : queryImageInput,
          message: what + " is " + megabytes(f.size) + ", above this service's limit of " + megabytes(limits.max_upload_bytes) + ".",
        };
      }
    }
    if (queryInput.value.trim().length > limits.max_query_chars) {
      return { field: queryInput, message: "The query is longer than " + limits.max_query_chars + " characters." };
    }
    for (const part of customParts()) {
      const m = RATIO.exec(part);
      if (!m || !(Number(m[1]) > 0) || !(Number(m[2]) > 0)) {
        return { field: aspectCustom, message: "Give each other ratio as W:H with two positive numbers, e.g. 5:4." };
      }
    }
    if (sizeInput.value.trim() !== "") {
      const m = SIZE.exec(sizeInput.value);
      const ok = (v) => Number(v) >= 1 && Number(v) <= limits.max_output_side;
      if (!m || !ok(m[1]) || !ok(m[2])) {
        return { field: sizeInput, message: "Give the size as W×H in pixels, each side 1 to " + limits.max_output_side + ", e.g. 1080x1350." };
      }
    }
    return null;
  }

  function customParts() {
    return aspectCustom.value.split(",").map((p) => p.trim()).filter((p) => p !== "");
  }

  // the ratios asked for, in the order shown: checked presets, then the other ratios typed
  function chosenAspects() {
    const typed = customParts().map((p) => {
      const m = RATIO.exec(p);
      return m ? m[1] + ":" + m[2] : p;
    });
    return checkedPresets().concat(typed.filter((r) => !checkedPresets().includes(r)));
  }

  function cutCrop(img, box, W, H, outputSize) {
    // boxes are in pixels of the upright original; the browser shows the image upright too;
    // outputSize (the server's, when a size was asked for) is the picture's exact size
    const sx = img.naturalWidth / W;
    const sy = img.naturalHeight / H;
    const [x0, y0, x1, y1] = box;
    const w = outputSize ? outputSize[0] : Math.max(1, Math.round((x1 - x0) * sx));
    const h = outputSize ? outputSize[1] : Math.max(1, Math.round((y1 - y0) * sy));
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(img, x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy, 0, 0, w, h);
    return new Promise((resolve) => canvas.toBlob((b) => resolve(b), "image/jpeg", 0.92));
  }

  async function showThumbs(result, file, imageOk) {
    const groups = groupsOf(result);
    for (const group of groups) {
      const section = document.createElement("section");
      section.className = "group";
      section.dataset.aspect = group.aspect || "free";
      const title = document.createElement("h3");
      const n = group.crops.length;
      title.textContent = (group.aspect ? "Aspect " + group.aspect : "Free crops") + " · " + n + " crop" + (n === 1 ? "" : "s");
      const list = document.createElement("ol");
      list.className = "thumbs";
      section.append(title, list);
      thumbs.appendChild(section);
      for (const item of group.crops) {
        list.appendChild(await thumb(result, item, groups.length > 1 ? group.aspect : null, file, imageOk));
      }
    }
  }

  async function thumb(result, { crop, index: i, rank }, aspect, file, imageOk) {
    const [x0, y0, x1, y1] = crop.box;
    const name = (aspect ? aspect + " " : "") + "crop " + rank;
    const li = document.createElement("li");
    li.style.setProperty("--c", COLORS[i % COLORS.length]);
    li.tabIndex = -1;
    const meta = document.createElement("p");
    meta.className = "meta score";
    const label = document.createElement("strong");
    label.textContent = "#" + rank;
    meta.appendChild(label);
    const size = crop.output_size ? " → " + crop.output_size[0] + "×" + crop.output_size[1] : "";
    meta.appendChild(document.createTextNode(" score " + crop.score.toFixed(3) + " · " + (x1 - x0) + "×" + (y1 - y0) + size));
    let blob = null;
    if (imageOk) {
      try {
        blob = await cutCrop(preview, crop.box, result.width, result.height, crop.output_size);
      } catch (e) {
        blob = null;
      }
    }
    if (!blob) {
      li.appendChild(meta);
      return li;
    }
    const url = URL.createObjectURL(blob);
    thumbUrls.push(url);
    const img = document.createElement("img");
    img.src = url;
    img.alt = name[0].toUpperCase() + name.slice(1) + ", score " + crop.score.toFixed(3);
    li.append(img, meta);
    const a = document.createElement("a");
    a.href = url;
    a.download = stem(file.name) + (aspect ? "_" + aspect.replace(/[:.]/g, "x") : "") + "_crop" + rank + ".jpg";
    a.textContent = "Download " + name;
    const highlight = (on) => {
      const box = $("box-" + (i + 1));
      if (box) box.classList.toggle("active", on);
    };
    a.addEventListener("focus", () => highlight(true));
    a.addEventListener("blur", () => highlight(false));
    li.addEventListener("mouseenter", () => highlight(true));
    li.addEventListener("mouseleave", () => highlight(false));
    li.appendChild(a);
    return li;
  }

  async function errorMessage(response) {
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (e) {
      /* not JSON */
    }
    if (!message) message = response.statusText || "request failed";
    return "Error " + response.status + ": " + message;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    const file = imageInput.files[0];
    if (!file) {
      showError("Choose an image first.");
      imageInput.focus();
      return;
    }
    const queryImage = queryImageInput.files[0];
    const problem = formProblem(file, queryImage);
    if (problem) {
      showError(problem.message);
      problem.field.focus();
      return;
    }
    if (!keyBox.hidden) storeKey(keyInput.value.trim());
    const data = new FormData();
    data.append("image", file, file.name);
    const query = queryInput.value;
    if (!queryImage && query.trim() !== "") data.append("query", query); // never both
    if (queryImage) data.append("image_query", queryImage, queryImage.name);
    if (topKInput.value !== "") data.append("top_k", topKInput.value);
    const aspects = chosenAspects();
    aspects.forEach((a) => data.append("aspect", a)); // repeated: one field per ratio
    if (sizeInput.value.trim() !== "") data.append("size", sizeInput.value.trim());
    if (upscaleInput.checked) data.append("upscale", "true");
    if (facesInput.checked) data.append("faces", "true");
    if (avoidInput.value.trim() !== "") data.append("avoid", avoidInput.value);
    const headers = {};
    const key = readKey();
    if (key) headers["Authorization"] = "Bearer " + key;

    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    setStatus("Cropping…");
    const started = performance.now();
    try {
      const response = await fetch("/v1/crop", { method: "POST", body: data, headers });
      if (response.status === 401) {
        const hadKey = Boolean(key);
        keyBox.hidden = false;
        storeKey("");
        setStatus("");
        showError(
          hadKey
            ? "The API key was not accepted. Check it and press Crop again."
            : "This service needs an API key: enter it and press Crop again."
        );
        keyInput.focus();
        return;
      }
      if (!response.ok) {
        setStatus("");
        showError(await errorMessage(response));
        return;
      }
      const result = await response.json();
      clearResults();
      if (!imageUrl) showPreview(file);
      const imageOk = await waitForImage(preview);
      stage.hidden = !imageOk;
      placeholder.hidden = true;
      showQuery(result, queryImage, aspects);
      drawBoxes(result);
      await showThumbs(result, file, imageOk);
      const ms = Math.round(performance.now() - started);
      const n = result.crops.length;
      setStatus(n + " crop" + (n === 1 ? "" : "s") + " (" + result.mode + " mode) in " + ms + " ms.");
    } catch (e) {
      setStatus("");
      showError("Could not reach the service: " + (e && e.message ? e.message : e));
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  const saved = readKey();
  if (saved) {
    keyBox.hidden = false;
    keyInput.value = saved;
  }
  syncCondition();
  loadInfo(60);
})();
