// The reelgen page. It uses only the public API, as any other client does: GET /v1/models, POST /v1/videos,
// GET /v1/videos, each video's event stream, cancel, and signed links for playing and downloading.

const KEY = "reelgen.api_key"; // in sessionStorage: the key lasts as long as this tab
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const PAGE = 12; // videos per GET /v1/videos
const RETRY_MS = 2000; // wait before following a video again after its event stream broke

const $ = (id) => document.getElementById(id);
const models = new Map(); // id -> model object of GET /v1/models
const following = new Map(); // video id -> AbortController of its event stream
let lastId = null; // the cursor of "Load older videos"
// Newest first, as GET /v1/videos lists them. created_at has whole seconds only: within one second, videos keep
// the order the page learned of them in (the list's order; the ones it creates above).
const ties = new Map(); // video id -> rank among videos of the same second
let listed = 0;
let created = 0;

class ApiError extends Error {
  constructor(status, message, param = null) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

async function api(path, { method = "GET", json, form, signal } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`; // no key, no header: a service without keys wants none
  let body = form; // FormData: the browser sets multipart/form-data and its boundary
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (e) {
    if (signal?.aborted) throw e;
    throw new ApiError(0, `The service did not answer (${e.message}).`);
  }
  if (!response.ok) {
    // every API error has OpenAI's body: {"error": {"message", "type", "param", "code"}}
    const error = await response.json().then((b) => b?.error, () => null);
    throw new ApiError(response.status, error?.message ?? `${response.status} ${response.statusText}`, error?.param);
  }
  return response;
}

function showError(error) {
  $("error-message").textContent = error.message;
  $("error").hidden = false;
  const field = error.status === 401 ? $("api-key")
    : error.param && document.querySelector(`#create-form [name="${CSS.escape(error.param)}"]`);
  if (field) {
    field.setAttribute("aria-invalid", "true");
    field.focus();
  }
}

function clearError() {
  $("error").hidden = true;
  for (const field of document.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

// ---- models and the form

function fill(select, values, selected, label = (v) => v) {
  select.replaceChildren(...values.map((v) => new Option(label(v), v, false, v === selected)));
}

async function loadModels() {
  const { data } = await (await api("v1/models")).json();
  models.clear();
  for (const model of data) models.set(model.id, model);
  const current = $("model").value;
  fill($("model"), [...models.keys()], models.has(current) ? current : data[0]?.id);
  chooseModel();
}

function chooseModel() {
  const model = models.get($("model").value);
  if (!model) return;
  fill($("size"), model.sizes, model.default_size);
  fill($("seconds"), model.seconds, model.default_seconds, (s) => `${s} s`);
  fill($("sampler"), model.samplers, model.default_sampler);
  $("steps").placeholder = model.default_steps; // left empty, the model's defaults apply
  $("guidance").placeholder = model.default_guidance_scale;
  $("model-info").textContent = model.description;
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const form = new FormData(event.target);
  for (const [name, value] of [...form]) if (value === "") form.delete(name); // empty: the model's default
  $("generate").disabled = true;
  try {
    // multipart, as the openai SDK sends it: the service parses the numbers and names any bad one
    const video = await (await api("v1/videos", { method: "POST", form })).json();
    ties.set(video.id, ++created);
    show(video);
  } catch (e) {
    showError(e);
  } finally {
    $("generate").disabled = false;
  }
}

// ---- jobs and gallery

const describe = (v) => `${v.model} · ${v.size} · ${v.seconds} s · ${v.num_inference_steps} steps · seed ${v.seed}`;

// in list order, whatever order videos arrive in (pages of the list, new ones, ones that just finished)
function insert(container, element, video) {
  element.dataset.id = video.id;
  element.dataset.created = video.created_at;
  element.dataset.tie = ties.get(video.id) ?? 0;
  const key = (e) => [Number(e.dataset.created), Number(e.dataset.tie)];
  const [time, tie] = key(element);
  const next = [...container.children].find((other) => {
    const [otherTime, otherTie] = key(other);
    return otherTime < time || (otherTime === time && otherTie < tie);
  });
  container.insertBefore(element, next ?? null);
}

function show(video) {
  const shown = document.querySelector(`[data-id="${CSS.escape(video.id)}"]`);
  if (video.status === "completed") {
    if (shown?.classList.contains("card")) return;
    shown?.remove();
    insert($("gallery"), card(video), video);
    return;
  }
  // a stream's event may arrive after the answer to cancel: a finished video does not run again
  if (TERMINAL.has(shown?.dataset.status) && !TERMINAL.has(video.status)) return;
  const row = shown ?? jobRow(video);
  row.dataset.status = video.status;
  row.querySelector(".status").textContent = video.status.replace("_", " ");
  row.querySelector("progress").value = video.progress;
  row.querySelector(".percent").textContent = `${video.progress}%`;
  row.querySelector(".cancel").hidden = TERMINAL.has(video.status);
  row.querySelector(".job-error").textContent = video.error?.message ?? "";
  if (!shown) insert($("jobs"), row, video);
  if (!TERMINAL.has(video.status)) follow(video.id);
}

// a copy of a <template>, with the video's prompt (in full on hover) and settings
function fromTemplate(id, video) {
  const element = $(id).content.firstElementChild.cloneNode(true);
  const prompt = element.querySelector(".prompt");
  prompt.textContent = prompt.title = video.prompt;
  element.querySelector(".meta").textContent = describe(video);
  return element;
}

function jobRow(video) {
  const row = fromTemplate("job-template", video);
  row.querySelector("progress").setAttribute("aria-label", `progress of ${video.id}`);
  row.querySelector(".cancel").addEventListener("click", () => cancel(video.id));
  return row;
}

function card(video) {
  const figure = fromTemplate("card-template", video);
  attachMedia(figure, video).catch((e) => {
    figure.querySelector(".media").textContent = e.message; // files expired, storage down: said on the card
    figure.classList.add("broken");
  });
  return figure;
}

// <video src> and a download cannot send a key: signed links need none
async function attachMedia(figure, video) {
  const sign = async (variant) =>
    (await api(`v1/videos/${video.id}/link`, { method: "POST", json: { variant } })).json();
  const [file, thumbnail] = await Promise.all([sign("video"), sign("thumbnail")]);
  let media;
  if (video.format === "gif") {
    media = new Image();
    media.alt = video.prompt;
  } else {
    media = document.createElement("video");
    // metadata only until played (the duration, and a click anywhere plays); the thumbnail shows meanwhile
    Object.assign(media, { controls: true, loop: true, playsInline: true, preload: "metadata",
                           poster: thumbnail.url });
    // the links expire (an hour by default): a page left open signs new ones when playing fails
    media.addEventListener("error", () => {
      if (Date.now() / 1000 >= file.expires_at) attachMedia(figure, video).catch(showError);
    }, { once: true });
  }
  media.src = file.url;
  figure.querySelector(".media").replaceChildren(media);
  const download = figure.querySelector(".download");
  download.href = file.url;
  download.download = `${video.id}.${video.format}`;
}

async function cancel(id) {
  clearError();
  try {
    show(await (await api(`v1/videos/${id}/cancel`, { method: "POST" })).json());
  } catch (e) {
    showError(e);
  }
}

// EventSource cannot send a key either: read the stream with fetch. It ends once the video has finished.
async function follow(id) {
  if (following.has(id)) return;
  const controller = new AbortController();
  following.set(id, controller);
  try {
    for (;;) {
      try {
        const response = await api(`v1/videos/${id}/events`, { signal: controller.signal });
        for await (const video of events(response.body)) {
          show(video);
          if (TERMINAL.has(video.status)) return;
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        if (e.status === 404) { // deleted by another client
          document.querySelector(`[data-id="${CSS.escape(id)}"]`)?.remove();
          return;
        }
        if (e.status >= 400 && e.status < 500 && e.status !== 429) return showError(e);
        // no answer, over the key's rate (429) or a 5xx (a restart, a database failover): the job goes on
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      if (controller.signal.aborted) return;
    }
  } finally {
    if (following.get(id) === controller) following.delete(id);
  }
}

// text/event-stream: each event's data is the video object, as GET /v1/videos/{id} returns it
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r?\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield JSON.parse(data.join("\n"));
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        } // comments (keep-alive pings) and the other fields carry nothing the page needs
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function loadVideos(after = null) {
  const query = new URLSearchParams({ limit: PAGE });
  if (after) query.set("after", after);
  const page = await (await api(`v1/videos?${query}`)).json();
  for (const video of page.data) {
    ties.set(video.id, -++listed);
    show(video);
  }
  lastId = page.last_id;
  $("more").hidden = !page.has_more;
}

async function reload() {
  clearError();
  for (const controller of following.values()) controller.abort();
  following.clear();
  $("jobs").replaceChildren();
  $("gallery").replaceChildren();
  try {
    await loadModels();
    await loadVideos();
  } catch (e) {
    showError(e);
  }
}

$("api-key").value = sessionStorage.getItem(KEY) ?? "";
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  reload();
});
$("create-form").addEventListener("submit", submit);
$("model").addEventListener("change", chooseModel);
$("refresh").addEventListener("click", reload);
$("more").addEventListener("click", () => loadVideos(lastId).catch(showError));
$("error-close").addEventListener("click", clearError);
reload();
