// The explorer page: data -> fit (as a job) -> plot, membership, model selection.
// State lives in one object; every user action is an async function that clears the
// problem box, does its requests, and shows what went wrong if anything did.

import { ApiError, apiKey, request, setApiKey } from "./api.js";
import { PALETTE, drawCurve, drawScatter } from "./plot.js";

// An SVG of more circles than this gets slow to draw and to hover; larger data sets
// show an evenly spaced subset (and say so). Fits always use every point.
const MAX_DRAWN = 5000;
const POLL_MS = 250;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const $ = (id) => document.getElementById(id);

const state = {
  dataset: null, // the /v1/datasets resource
  points: [], // every point, in the data's own features
  drawn: [], // indices into points of the points drawn
  model: null,
  ellipses: null,
  prediction: null, // predict's answer for the drawn points, in drawn order
  job: null, // the job being followed
  opening: null, // the ?model= still to open
  busy: false,
};

// -- small helpers --------------------------------------------------------------

function text(tag, content, attrs = {}) {
  const node = document.createElement(tag);
  if (content != null) node.textContent = content;
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function fmt(value, digits = 4) {
  return typeof value === "number" ? Number(value.toFixed(digits)).toString() : String(value);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setBusy(busy) {
  state.busy = busy;
  for (const button of document.querySelectorAll("#presets button")) button.disabled = busy;
  $("csv-file").disabled = busy;
  $("fit").disabled = busy || !state.dataset;
  $("select").disabled = busy || !state.dataset;
  $("export").disabled = busy || !state.model;
}

/** The problem box: title and status, detail, and each field error with its location. */
function showProblem(err) {
  const box = $("problem");
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  const problem = err instanceof ApiError ? err.problem : { title: "Error in the page", detail: String(err) };
  const title = problem.status ? `${problem.title} (${problem.status})` : problem.title;
  box.append(text("strong", title, { class: "problem-title" }));
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  const said = (item) => problem.detail && problem.detail.includes(item.msg);
  const where = (item) => (item.loc || []).join(".");
  // A one-field problem's detail is its error's message: say it once, with its place.
  if (errors.length === 1 && said(errors[0]) && where(errors[0])) {
    box.append(text("p", `${where(errors[0])}: ${errors[0].msg}`, { class: "problem-detail" }));
  } else {
    if (problem.detail) box.append(text("p", problem.detail, { class: "problem-detail" }));
    const list = text("ul", null, { class: "problem-errors" });
    for (const item of errors) {
      if (said(item) && problem.detail.includes(where(item))) continue; // said in full above
      list.append(text("li", where(item) ? `${where(item)}: ${item.msg}` : item.msg));
    }
    if (list.children.length) box.append(list);
  }
  box.hidden = false;
  if (!(err instanceof ApiError)) console.error(err); // a bug in the page: keep the stack
}

/** Runs one user action: busy while it runs, its failure shown, never thrown. */
function action(fn) {
  return async (...args) => {
    if (state.busy) return;
    showProblem(null);
    setBusy(true);
    try {
      await fn(...args);
    } catch (err) {
      showProblem(err);
    } finally {
      setBusy(false);
    }
  };
}

// -- data -------------------------------------------------------------------------

function setData(dataset, points, description) {
  Object.assign(state, { dataset, points, model: null, ellipses: null, prediction: null });
  const step = Math.max(1, Math.ceil(points.length / MAX_DRAWN));
  state.drawn = [];
  for (let i = 0; i < points.length; i += step) state.drawn.push(i);
  let status = `${description}: ${dataset.n_samples} points, ${dataset.n_features} features ` +
    `(dataset ${dataset.id.slice(0, 12)}…).`;
  if (step > 1) status += ` Showing every ${step}th point (${state.drawn.length}).`;
  $("data-status").textContent = status;
  $("model-summary").replaceChildren();
  $("criterion-curve").replaceChildren();
  $("selection-status").textContent = "";
  redraw();
}

const loadPreset = (preset) => action(async () => {
  const generated = await request("POST", "v1/datasets/generate", { json: preset.generator });
  const dataset = await request("POST", "v1/datasets", {
    json: { generator: preset.generator, name: preset.id },
  });
  if (preset.n_components) $("n-components").value = preset.n_components;
  setData(dataset, generated.points, preset.summary);
})();

/**
 * Numbers of a CSV file, to draw them. The service parses the same bytes for the
 * fit; the header decision is made here and sent along (`header=present|absent`)
 * so that both read the same rows, and the shapes are compared afterwards.
 */
function parseCsv(source) {
  const rows = source
    .split(/\r\n|\n|\r/)
    .map((line) => line.split(",").map((cell) => cell.trim().replace(/^"(.*)"$/, "$1").trim()))
    .filter((cells) => cells.some((cell) => cell !== ""));
  const number = (cell) => (cell === "" ? NaN : Number(cell));
  // The service's rule: a first line is a header only when none of its cells is a number.
  const header = rows.length > 0 && rows[0].every((cell) => Number.isNaN(number(cell)));
  return { header, points: (header ? rows.slice(1) : rows).map((cells) => cells.map(number)) };
}

const uploadCsv = action(async (file) => {
  const { header, points } = parseCsv(await file.text());
  const name = encodeURIComponent(file.name.slice(0, 200) || "upload.csv");
  const dataset = await request("POST", `v1/datasets?name=${name}`, {
    body: file,
    contentType: `text/csv; header=${header ? "present" : "absent"}`,
  });
  const width = points.length ? points[0].length : 0;
  if (dataset.n_samples !== points.length || dataset.n_features !== width) {
    throw new ApiError({
      title: "This page cannot draw this file",
      detail: `The service read ${dataset.n_samples} x ${dataset.n_features} numbers from ` +
        `${file.name}, this page ${points.length} x ${width}. The dataset is stored ` +
        `(${dataset.id}): fit it with the API.`,
    });
  }
  setData(dataset, points, `Uploaded ${file.name}`);
});

// -- jobs -------------------------------------------------------------------------

function showJob(job) {
  const p = job.progress;
  $("job-progress").value = p.fraction;
  $("job-status").textContent = jobLine(job);
  $("cancel").disabled = TERMINAL.has(job.status) || job.cancel_requested;
}

/** What is known of a job: a fit says its init, stage, EM iteration and the lower
 * bound's change against tol (its count alone jumps when an init converges early, and
 * ends at "100 / 100" for a model that converged in 2 iterations). */
function jobLine(job) {
  const p = job.progress;
  let status = `${job.kind} ${job.status}`;
  if (p.stage == null) {
    status += `: ${p.done} / ${p.total} ${p.unit}`;
  } else {
    const parts = [];
    if (p.n_init != null && p.n_init > 1) parts.push(`init ${p.init} of ${p.n_init}`);
    if (p.stage === "initializing") parts.push("computing the starting point");
    else if (p.iteration != null && p.unit === "steps") {
      parts.push(`step ${p.iteration} of ${p.max_iter}`);
    } else if (p.iteration != null && p.stage === "finished") {
      parts.push(`after ${p.iteration} EM iterations`);
    } else if (p.iteration != null) {
      parts.push(`EM iteration ${p.iteration} (at most ${p.max_iter})`);
    }
    if (parts.length) status += `: ${parts.join(", ")}`;
  }
  if (p.lower_bound != null) status += `, lower bound ${fmt(p.lower_bound)}`;
  if (p.change != null && p.stage === "iterating") {
    // toPrecision: a change of 3e-7 is the news here, and fmt's 4 decimals print 0.
    status += ` (change ${p.change.toPrecision(2)}, stops below tol ${p.tol.toPrecision(2)})`;
  }
  if (job.cancel_requested && !TERMINAL.has(job.status)) status += " (cancelling…)";
  return status;
}

/** Polls a job until it ends; its final state (a failed job throws its problem). */
async function follow(job) {
  state.job = job;
  $("job").hidden = false;
  try {
    while (!TERMINAL.has(job.status)) {
      showJob(job);
      await sleep(POLL_MS);
      job = await request("GET", `v1/jobs/${job.id}`);
      state.job = job;
    }
  } finally {
    state.job = null;
  }
  showJob(job);
  if (job.status === "failed") throw new ApiError(job.error || { title: "The job failed" });
  return job;
}

async function cancelJob() {
  const job = state.job;
  if (!job) return;
  $("cancel").disabled = true;
  try {
    showJob(await request("POST", `v1/jobs/${job.id}/cancel`));
  } catch (err) {
    showProblem(err);
  }
}

// -- fit and plot -----------------------------------------------------------------

function fitParams() {
  const algorithm = $("algorithm").value;
  const k = Number($("n-components").value);
  const params = { n_init: Number($("n-init").value) };
  const seed = $("random-state").value.trim();
  if (seed !== "") params.random_state = Number(seed);
  if (algorithm === "kmeans") params.n_clusters = k;
  else Object.assign(params, { n_components: k, covariance_type: $("covariance-type").value });
  return { algorithm, params };
}

const fit = action(async () => {
  if (!state.dataset) return;
  const { algorithm, params } = fitParams();
  const accepted = await request("POST", "v1/models", {
    json: { algorithm, params, data: { dataset_id: state.dataset.id }, wait: false },
  });
  const job = await follow(accepted);
  if (job.status === "succeeded") await showModel(job.model_id);
});

async function showModel(id) {
  const drawnPoints = state.drawn.map((i) => state.points[i]);
  const [model, ellipses, prediction] = await Promise.all([
    request("GET", `v1/models/${id}`),
    request("GET", `v1/models/${id}/ellipses`),
    request("POST", `v1/models/${id}/predict`, { json: { points: drawnPoints } }),
  ]);
  Object.assign(state, { model, ellipses, prediction });
  summarise(model);
  redraw();
}

function summarise(model) {
  const rows = [
    ["algorithm", model.algorithm],
    ["model id", model.id, { class: "id", title: model.id }],
    [model.algorithm === "kmeans" ? "n_clusters" : "n_components", model.n_components],
  ];
  if (model.covariance_type) rows.push(["covariance_type", model.covariance_type]);
  if ("converged" in model) rows.push(["converged", String(model.converged)]);
  rows.push(["n_iter", model.n_iter]);
  if (model.bic != null) rows.push(["BIC", fmt(model.bic, 2)], ["AIC", fmt(model.aic, 2)]);
  if (model.inertia != null) rows.push(["inertia", fmt(model.inertia, 2)]);
  rows.push(["fit time", `${fmt(model.fit_seconds, 3)} s`]);
  for (const warning of model.warnings || []) rows.push(["warning", warning.message || warning.category]);
  if (model.name) rows.splice(2, 0, ["name", model.name, { class: "id", title: model.name }]);
  $("model-summary").replaceChildren(
    ...rows.flatMap(([term, value, attrs]) => [text("dt", term), text("dd", value, attrs)]),
  );
}

/** Plotted coordinates of a point: the data's own, or /ellipses' PCA projection. */
function project(point) {
  const pca = state.ellipses && state.ellipses.pca;
  if (pca) {
    return pca.components.map((axis) => axis.reduce((sum, a, j) => sum + a * (point[j] - pca.mean[j]), 0));
  }
  return point.length === 1 ? [point[0], 0] : [point[0], point[1]];
}

function projectionNote() {
  const n = state.dataset ? state.dataset.n_features : 0;
  const pca = state.ellipses && state.ellipses.pca;
  if (pca) {
    const [a, b] = pca.explained_variance_ratio.map((r) => `${(100 * r).toFixed(1)}%`);
    return [`${n} features: showing the first two principal components of the training data ` +
      `(${a} and ${b} of the variance), where /ellipses projects the components too.`, ["PC1", "PC2"]];
  }
  if (n > 2) {
    return [`${n} features: showing the first two (feature 0 and feature 1) until a model is ` +
      "fitted, then the first two principal components.", ["feature 0", "feature 1"]];
  }
  if (n === 1) return ["1 feature: drawn along x (y = 0); ellipses become intervals.", ["feature 0", ""]];
  return [n ? "x: feature 0, y: feature 1, on the same scale." : "", ["feature 0", "feature 1"]];
}

function redraw() {
  const [note, axisLabels] = projectionNote();
  $("projection").textContent = note;
  drawScatter($("scatter"), {
    points: state.drawn.map((i) => project(state.points[i])),
    labels: state.prediction ? state.prediction.labels : null,
    components: state.ellipses ? state.ellipses.components : [],
    axisLabels,
    onFocus: showMembership,
  });
  $("membership").replaceChildren(text("p", state.points.length
    ? "Hover over a point (or focus the plot and press the arrow keys) to see its membership."
    : "No data yet.", { class: "note" }));
}

/** The readout for drawn point `k`: its coordinates, label and soft membership. */
function showMembership(k) {
  const index = state.drawn[k];
  const point = state.points[index];
  const box = $("membership");
  const head = `Point ${index}: (${point.slice(0, 4).map((v) => fmt(v, 3)).join(", ")}` +
    `${point.length > 4 ? ", …" : ""})`;
  const nodes = [text("p", head, { class: "point-head" })];
  const prediction = state.prediction;
  if (prediction) {
    const label = prediction.labels[k];
    nodes.push(text("p", `label ${label}`, { class: "point-label" }));
    const values = prediction.probabilities || prediction.distances;
    const kind = prediction.probabilities ? "probability" : "distance";
    nodes.push(text("p", prediction.probabilities
      ? "P(component | point), from predict:"
      : "Distance to each centre, from predict:", { class: "note" }));
    const list = text("ol", null, { class: `membership-list ${kind}`, start: 0 });
    values[k].forEach((value, c) => {
      const item = text("li", null, { [`data-${kind}`]: value, "data-component": c });
      item.append(text("span", "", { class: `swatch c${c % PALETTE.length}`, "aria-hidden": "true" }));
      item.append(text("span", `component ${c}: ${fmt(value)}`));
      if (kind === "probability") item.append(text("meter", null, { min: 0, max: 1, value }));
      if (c === label) item.classList.add("chosen");
      list.append(item);
    });
    nodes.push(list);
  }
  box.replaceChildren(...nodes);
}

const exportModel = action(async () => {
  const id = state.model.id;
  const response = await request("GET", `v1/models/${id}/export`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = text("a", null, { href: url, download: `gmm-model-${id}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000); // after the download has started
});

// -- a stored model, from the URL ---------------------------------------------------

/** `/explorer?model=<id or name>`: the model, its training points (thinned as the page
 * thins data), means and ellipses, and the selection curve it won on, if any. */
async function openStored(ref) {
  let model;
  if (/^[0-9a-f]{28}$/.test(ref)) {
    model = await request("GET", `v1/models/${ref}`);
  } else {
    const page = await request("GET", `v1/models?name=${encodeURIComponent(ref)}&limit=1`);
    if (!page.items.length) {
      throw new ApiError({ title: "No such model", status: 404, detail: `No model is named ${ref}.` });
    }
    model = page.items[0];
  }
  const drawn = await request("GET", `v1/models/${model.id}/points?limit=${MAX_DRAWN}`);
  const dataset = { id: model.dataset_id || model.id, n_samples: drawn.n_samples, n_features: drawn.n_features };
  setData(dataset, drawn.points, `Model ${model.name || model.id}: its training points`);
  if (drawn.step > 1) {
    $("data-status").textContent += ` Showing every ${drawn.step}th point (${drawn.points.length}).`;
  }
  await showModel(model.id);
  if (model.selection) {
    drawCurve($("criterion-curve"), {
      scores: model.selection.scores, criterion: model.selection.criterion, bestK: model.n_components,
    });
    $("selection-status").textContent =
      `This model won a model selection by ${model.selection.criterion.toUpperCase()}.`;
  }
  state.opening = null;
}

// -- model selection --------------------------------------------------------------

const select = action(async () => {
  if (!state.dataset) return;
  const kMax = Math.min(Number($("k-max").value), state.dataset.n_samples);
  const criterion = $("criterion").value;
  const { params } = fitParams();
  const body = {
    data: { dataset_id: state.dataset.id },
    grid: { n_components: { min: 1, max: kMax }, covariance_type: [$("covariance-type").value] },
    criterion,
    params: { n_init: params.n_init, ...("random_state" in params ? { random_state: params.random_state } : {}) },
    wait: false,
  };
  $("selection-status").textContent = `Fitting k = 1 … ${kMax}…`;
  const accepted = await request("POST", "v1/model-selection", { json: body });
  const job = await follow(accepted);
  if (job.status !== "succeeded") {
    $("selection-status").textContent = `Model selection ${job.status}.`;
    return;
  }
  const result = job.result;
  drawCurve($("criterion-curve"), {
    scores: result.scores, criterion, bestK: result.best ? result.best.n_components : null,
  });
  const failed = result.scores.filter((s) => s.error).length;
  $("selection-status").textContent = result.best
    ? `Best k = ${result.best.n_components} by ${criterion.toUpperCase()} ` +
      `(${fmt(result.best[criterion], 2)}), covariance_type ${result.best.covariance_type}.` +
      (failed ? ` ${failed} cell(s) failed to fit.` : "")
    : "No k could be fitted.";
});

// -- wiring -----------------------------------------------------------------------

function syncAlgorithm() {
  const kmeans = $("algorithm").value === "kmeans";
  $("n-components-label").textContent = kmeans ? "n_clusters" : "n_components";
  $("covariance-type").disabled = kmeans;
}

async function loadPresets() {
  const { presets } = await request("GET", "explorer/presets.json");
  const box = $("presets");
  for (const preset of presets) {
    const button = text("button", `Generate: ${preset.summary}`, { type: "button", "data-preset": preset.id });
    button.addEventListener("click", () => loadPreset(preset));
    box.append(button);
  }
}

function init() {
  const key = $("api-key");
  key.value = apiKey();
  key.addEventListener("input", () => setApiKey(key.value.trim()));
  $("key-form").addEventListener("submit", (event) => event.preventDefault());
  $("algorithm").addEventListener("change", syncAlgorithm);
  $("fit-form").addEventListener("submit", (event) => { event.preventDefault(); fit(); });
  $("selection-form").addEventListener("submit", (event) => { event.preventDefault(); select(); });
  $("cancel").addEventListener("click", cancelJob);
  $("export").addEventListener("click", exportModel);
  $("csv-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = ""; // choosing the same file again fires change again
    if (file) uploadCsv(file);
  });
  // A model named in the URL opens now; if the key was missing (401), again once one is
  // typed and Enter pressed.
  state.opening = new URLSearchParams(window.location.search).get("model");
  $("key-form").addEventListener("submit", () => {
    if (state.opening) action(openStored)(state.opening);
  });
  syncAlgorithm();
  redraw();
  action(async () => {
    await loadPresets();
    if (state.opening) await openStored(state.opening);
  })();
}

init();
