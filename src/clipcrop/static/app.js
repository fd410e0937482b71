// ClipCrop web page: plain JS, no build step, no third-party code.
// Posts the form to /v1/crop, draws the ranked crops on the image and cuts them client-side
// (canvas) from the uploaded file so that each can be downloaded.
"use strict";

(function () {
  const COLORS = ["#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55"];
  const KEY_STORAGE = "clipcrop-api-key";

  const $ = (id) => document.getElementById(id);
  const form = $("crop-form");
  const imageInput = $("image");
  const queryInput = $("query");
  const queryImageInput = $("image-query");
  const topKInput = $("top-k");
  const aspectSelect = $("aspect");
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

  $("clear-image-query").addEventListener("click", () => {
    queryImageInput.value = "";
    queryImageInput.focus();
  });

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

  function drawBoxes(result) {
    const W = result.width;
    const H = result.height;
    result.crops.forEach((crop, i) => {
      const [x0, y0, x1, y1] = crop.box;
      const box = document.createElement("div");
      box.className = "box";
      box.id = "box-" + (i + 1);
      box.style.setProperty("--c", COLORS[i % COLORS.length]);
      box.style.left = (100 * x0) / W + "%";
      box.style.top = (100 * y0) / H + "%";
      box.style.width = (100 * (x1 - x0)) / W + "%";
      box.style.height = (100 * (y1 - y0)) / H + "%";
      box.style.zIndex = String(result.crops.length - i);
      const label = document.createElement("span");
      label.className = "rank";
      label.textContent = String(i + 1);
      box.appendChild(label);
      boxesEl.appendChild(box);
    });
  }

  function cutCrop(img, box, W, H) {
    // boxes are in pixels of the upright original; the browser shows the image upright too
    const sx = img.naturalWidth / W;
    const sy = img.naturalHeight / H;
    const [x0, y0, x1, y1] = box;
    const w = Math.max(1, Math.round((x1 - x0) * sx));
    const h = Math.max(1, Math.round((y1 - y0) * sy));
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(img, x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy, 0, 0, w, h);
    return new Promise((resolve) => canvas.toBlob((b) => resolve(b), "image/jpeg", 0.92));
  }

  async function showThumbs(result, file, imageOk) {
    const base = stem(file.name);
    for (let i = 0; i < result.crops.length; i++) {
      const crop = result.crops[i];
      const [x0, y0, x1, y1] = crop.box;
      const li = document.createElement("li");
      li.style.setProperty("--c", COLORS[i % COLORS.length]);
      li.tabIndex = -1;
      const meta = document.createElement("p");
      meta.className = "meta";
      const rank = document.createElement("strong");
      rank.textContent = "#" + (i + 1);
      meta.appendChild(rank);
      meta.appendChild(
        document.createTextNode(" score " + crop.score.toFixed(3) + " · " + (x1 - x0) + "×" + (y1 - y0))
      );
      meta.className = "meta score";
      let blob = null;
      if (imageOk) {
        try {
          blob = await cutCrop(preview, crop.box, result.width, result.height);
        } catch (e) {
          blob = null;
        }
      }
      if (blob) {
        const url = URL.createObjectURL(blob);
        thumbUrls.push(url);
        const img = document.createElement("img");
        img.src = url;
        img.alt = "Crop " + (i + 1) + ", score " + crop.score.toFixed(3);
        li.appendChild(img);
        li.appendChild(meta);
        const a = document.createElement("a");
        a.href = url;
        a.download = base + "_crop" + (i + 1) + ".jpg";
        a.textContent = "Download crop " + (i + 1);
        const highlight = (on) => {
          const box = $("box-" + (i + 1));
          if (box) box.classList.toggle("active", on);
        };
        a.addEventListener("focus", () => highlight(true));
        a.addEventListener("blur", () => highlight(false));
        li.addEventListener("mouseenter", () => highlight(true));
        li.addEventListener("mouseleave", () => highlight(false));
        li.appendChild(a);
      } else {
        li.appendChild(meta);
      }
      thumbs.appendChild(li);
    }
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
    if (!keyBox.hidden) storeKey(keyInput.value.trim());
    const data = new FormData();
    data.append("image", file, file.name);
    const query = queryInput.value;
    if (query.trim() !== "") data.append("query", query);
    const queryImage = queryImageInput.files[0];
    if (queryImage) data.append("image_query", queryImage, queryImage.name);
    if (topKInput.value !== "") data.append("top_k", topKInput.value);
    if (aspectSelect.value) data.append("aspect", aspectSelect.value);
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
})();
