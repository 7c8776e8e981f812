// AnythingLLM agent skill: hand a task to a DyTopo swarm running behind `dytopo serve`.
//
// AnythingLLM calls runtime.handler with `this` bound to the skill's function config
// (introspect, logger, runtimeArgs, config). A handler that throws ends the user's chat session
// and a non-string result reaches the model as "[object Object]", so every path below returns
// one readable string. The service is asked to start a run, then polled: AnythingLLM's own
// sockets time out on long calls, and polling lets each finished round show up in the chat.
// Node 18+ has fetch built in: the folder needs no node_modules.

const DEFAULT_URL = "http://host.docker.internal:8765";
const DEFAULT_TOPOLOGY = "research";
const DEFAULT_TIMEOUT_S = 1800;
const DEFAULT_POLL_S = 2;
const REQUEST_TIMEOUT_MS = 30000;
// A poll that fails this many times in a row means the service is gone, not a blip.
const MAX_POLL_FAILURES = 3;
const MAX_TASK_CHARS = 20000;
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

class SkillError extends Error {}

function oneLine(text, limit = 400) {
  const flat = String(text ?? "").replace(/\s+/g, " ").trim();
  return flat.length > limit ? `${flat.slice(0, limit - 3)}...` : flat;
}

function settingsOf(runtimeArgs) {
  const args = runtimeArgs || {};
  const text = (name) => (typeof args[name] === "string" ? args[name].trim() : "");
  const url = (text("DYTOPO_URL") || DEFAULT_URL).replace(/\/+$/, "");
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || !["http:", "https:"].includes(parsed.protocol)) {
    throw new SkillError(
      `DYTOPO_URL "${url}" is not an http(s) URL: set it in the dytopo-swarm skill settings ` +
        `(${DEFAULT_URL} from Docker, http://127.0.0.1:8765 for a local install).`
    );
  }
  const timeoutText = text("DYTOPO_TIMEOUT_S") || String(DEFAULT_TIMEOUT_S);
  const timeoutS = Number(timeoutText);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
    throw new SkillError(
      `DYTOPO_TIMEOUT_S "${timeoutText}" is not a positive number of seconds: ` +
        "fix it in the dytopo-swarm skill settings."
    );
  }
  const pollS = Number(text("DYTOPO_POLL_S") || DEFAULT_POLL_S);
  return {
    url,
    token: text("DYTOPO_TOKEN"),
    topology: text("DYTOPO_TOPOLOGY") || DEFAULT_TOPOLOGY,
    timeoutMs: timeoutS * 1000,
    pollMs: Number.isFinite(pollS) && pollS > 0 ? pollS * 1000 : DEFAULT_POLL_S * 1000,
  };
}

function checkArgs(args) {
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    throw new SkillError(
      'dytopo-swarm needs its arguments as an object like {"task": "..."}; call it again that way.'
    );
  }
  const { task, topology } = args;
  if (typeof task !== "string" || !task.trim()) {
    throw new SkillError(
      "dytopo-swarm needs `task`: the whole task for the swarm as one non-empty text. " +
        "Call it again with the task written out."
    );
  }
  if (task.length > MAX_TASK_CHARS) {
    throw new SkillError(
      `dytopo-swarm's task is ${task.length} characters; the limit is ${MAX_TASK_CHARS}. ` +
        "Shorten it and call again."
    );
  }
  if (topology !== undefined && topology !== null && typeof topology !== "string") {
    throw new SkillError(
      "dytopo-swarm's `topology` must be a name such as research or code (text), " +
        "or left out for the default."
    );
  }
  return { task: task.trim(), topology: (topology || "").trim() || null };
}

function describeFetchError(error, settings) {
  if (error && error.name === "TimeoutError") {
    return `DyTopo service at ${settings.url} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  }
  const cause = error && error.cause ? error.cause.code || error.cause.message : null;
  return (
    `DyTopo service unreachable at ${settings.url}${cause ? ` (${cause})` : ""}: start it with ` +
    "`dytopo serve` (for AnythingLLM in Docker: `dytopo serve --host 0.0.0.0 --token ...` and " +
    `DYTOPO_URL ${DEFAULT_URL}), or fix DYTOPO_URL in the dytopo-swarm skill settings.`
  );
}

function detailOf(body, text) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail !== undefined) return JSON.stringify(body.detail);
  return text;
}

// One HTTP exchange with the service: the parsed JSON body, or a SkillError whose message is
// what the chat should read.
async function call(settings, method, path, body, remainingMs) {
  const headers = { Accept: "application/json" };
  if (settings.token) headers.Authorization = `Bearer ${settings.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const limitMs = Math.max(1000, Math.min(REQUEST_TIMEOUT_MS, remainingMs ?? REQUEST_TIMEOUT_MS));
  let response;
  try {
    response = await fetch(`${settings.url}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(limitMs),
    });
  } catch (error) {
    throw new SkillError(describeFetchError(error, settings), { cause: error });
  }
  const text = await response.text().catch(() => "");
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (response.status === 401 || response.status === 403) {
    throw new SkillError(
      `DyTopo service at ${settings.url} refused the request (HTTP ${response.status}): ` +
        "check DYTOPO_TOKEN in the dytopo-swarm skill settings; it must equal the token " +
        "`dytopo serve` was started with (--token or DYTOPO_TOKEN)."
    );
  }
  if (response.status === 429) {
    const after = response.headers.get("retry-after");
    throw new SkillError(
      `DyTopo service is busy: its run queue is full. Try again${after ? ` in ${after} s` : " later"}.`
    );
  }
  if (!response.ok) {
    const detail = oneLine(detailOf(parsed, text) || response.statusText, 300);
    const what = response.status < 500 ? "refused the request" : "failed";
    throw new SkillError(
      `DyTopo service ${what} (HTTP ${response.status} on ${method} ${path}): ${detail}`
    );
  }
  if (parsed === null || typeof parsed !== "object") {
    throw new SkillError(
      `${settings.url} did not answer like a DyTopo service (${method} ${path} gave no JSON ` +
        "object): check DYTOPO_URL in the dytopo-swarm skill settings."
    );
  }
  return parsed;
}

function roundLine(summary, maxRounds) {
  const edges = Array.isArray(summary.edges) ? summary.edges : [];
  const shown = edges.slice(0, 12).map((edge) => {
    // The service sends [sender, receiver]; an object form is read too.
    const [from, to] = Array.isArray(edge) ? edge : [edge?.source, edge?.target];
    return `${from} -> ${to}`;
  });
  if (edges.length > shown.length) shown.push(`and ${edges.length - shown.length} more`);
  const goal = oneLine(summary.goal, 200) || "(none)";
  const talk = shown.length ? shown.join(", ") : "no messages passed";
  const of = maxRounds ? `/${maxRounds}` : "";
  return `DyTopo round ${summary.round}${of} - goal: ${goal}; ${talk}`;
}

function outcome(info) {
  const id = info.id;
  switch (info.status) {
    case "succeeded":
      if (typeof info.final_answer === "string" && info.final_answer.trim()) {
        return info.final_answer;
      }
      return (
        `DyTopo run ${id} finished without a final answer` +
        (info.halt_reason ? ` (${oneLine(info.halt_reason, 200)})` : "") +
        "."
      );
    case "failed":
      return `DyTopo run ${id} failed: ${oneLine(info.error || "no reason given", 400)}`;
    case "cancelled":
      return `DyTopo run ${id} was cancelled before it finished.`;
    case "interrupted":
      return (
        `DyTopo run ${id} was interrupted (the service stopped during it)` +
        (info.resumable ? `; resume it with POST /v1/runs/${id}/resume.` : ".")
      );
    default:
      return `DyTopo run ${id} ended with status ${info.status}.`;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function runSwarm(ctx, args) {
  const settings = settingsOf(ctx.runtimeArgs);
  const { task, topology } = checkArgs(args);
  const show = (text) => (typeof ctx.introspect === "function" ? ctx.introspect(text) : undefined);
  const log = (text) => (typeof ctx.logger === "function" ? ctx.logger(text) : undefined);
  const deadline = Date.now() + settings.timeoutMs;
  const name = topology || settings.topology;

  const submitted = await call(settings, "POST", "/v1/runs", { task, topology: name });
  const id = submitted.id;
  if (typeof id !== "string" || !id) {
    throw new SkillError(
      `${settings.url} accepted the run but returned no run id: is DYTOPO_URL a DyTopo service?`
    );
  }
  const path = `/v1/runs/${encodeURIComponent(id)}`;
  log(`dytopo-swarm: run ${id} submitted to ${settings.url} (topology ${name})`);
  show(`DyTopo run ${id} started with topology "${name}"; rounds will show here as they finish.`);

  const seen = new Set();
  let failures = 0;
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      return await giveUp(settings, path, id, log);
    }
    await sleep(Math.min(settings.pollMs, remaining));
    let info;
    try {
      info = await call(settings, "GET", path, undefined, deadline - Date.now());
      failures = 0;
    } catch (error) {
      // A restart or a dropped connection can heal within a few polls; a refusal cannot.
      const transient = /unreachable|did not answer within|HTTP 5\d\d/.test(error.message);
      failures += 1;
      if (!transient || failures >= MAX_POLL_FAILURES) {
        throw new SkillError(`${error.message} (while following run ${id})`);
      }
      log(`dytopo-swarm: polling run ${id} failed (${failures}): ${error.message}`);
      continue;
    }
    for (const summary of Array.isArray(info.rounds) ? info.rounds : []) {
      if (summary && !seen.has(summary.round)) {
        seen.add(summary.round);
        show(roundLine(summary, info.max_rounds));
      }
    }
    if (TERMINAL.has(info.status)) {
      log(`dytopo-swarm: run ${id} ${info.status}`);
      return outcome(info);
    }
  }
}

// The deadline passed: stop the run so it does not hold the shared backend for nobody.
async function giveUp(settings, path, id, log) {
  const limitS = Math.round(settings.timeoutMs / 1000);
  let cancelled = "it was cancelled";
  try {
    await call(settings, "DELETE", path);
  } catch (error) {
    cancelled = `cancelling it failed too (${error.message})`;
  }
  log(`dytopo-swarm: run ${id} passed the ${limitS} s deadline; ${cancelled}`);
  return (
    `DyTopo run ${id} did not finish within DYTOPO_TIMEOUT_S (${limitS} s), so ${cancelled}. ` +
    "Raise DYTOPO_TIMEOUT_S in the dytopo-swarm skill settings or give the swarm a smaller task."
  );
}

module.exports.runtime = {
  handler: async function (args) {
    try {
      return await runSwarm(this || {}, args);
    } catch (error) {
      if (error instanceof SkillError) return error.message;
      return `dytopo-swarm failed unexpectedly: ${oneLine(error && error.message ? error.message : error)}`;
    }
  },
};
