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
// What a service may send back. A DyTopo service's answers are far smaller than MAX_BODY_BYTES
// (counted after decompression, so a gzip bomb stops there too); a longer final answer is
// clipped with a note; past MAX_ROUND_LINES rounds the chat gets a count instead of a line each.
const MAX_BODY_BYTES = 8 * 1024 * 1024;
const MAX_ANSWER_CHARS = 50000;
const MAX_ROUND_LINES = 50;
const MAX_REDIRECTS = 3;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "interrupted"]);

class SkillError extends Error {}

function oneLine(text, limit = 400) {
  const flat = String(text ?? "").replace(/\s+/g, " ").trim();
  return flat.length > limit ? `${flat.slice(0, limit - 3)}...` : flat;
}

// A URL as the chat may read it: a user name and password in it become ***.
function shownUrl(url) {
  const at = url.lastIndexOf("@");
  if (at < 0) return oneLine(url, 200);
  const scheme = url.indexOf("//");
  const start = scheme >= 0 && scheme < at ? scheme + 2 : 0;
  return oneLine(`${url.slice(0, start)}***${url.slice(at)}`, 200);
}

// Secrets no message may carry: the service token and a password written into DYTOPO_URL.
// Short values are left alone: replacing them would garble every message.
function secretsOf(runtimeArgs) {
  const args = runtimeArgs || {};
  const found = [];
  if (typeof args.DYTOPO_TOKEN === "string") found.push(args.DYTOPO_TOKEN.trim());
  const url = typeof args.DYTOPO_URL === "string" ? args.DYTOPO_URL : "";
  const at = url.lastIndexOf("@");
  if (at >= 0) {
    const scheme = url.indexOf("//");
    const userinfo = url.slice(scheme >= 0 && scheme < at ? scheme + 2 : 0, at);
    const password = userinfo.slice(userinfo.indexOf(":") + 1);
    found.push(userinfo, password);
    try {
      found.push(decodeURIComponent(password));
    } catch {
      // not percent-encoded text: the raw form is enough
    }
  }
  return [...new Set(found)].filter((secret) => secret.length >= 6);
}

// Every message the chat or the log gets: user:password@ of any URL, and the secrets, become ***.
function redact(text, secrets) {
  let clean = String(text).replace(/([a-z][a-z0-9+.-]*:\/\/)[^\s/?#@:]*:[^\s/?#@]*@/gi, "$1***@");
  for (const secret of secrets) clean = clean.split(secret).join("***");
  return clean;
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
      `DYTOPO_URL "${shownUrl(url)}" is not an http(s) URL: set it in the dytopo-swarm skill ` +
        `settings (${DEFAULT_URL} from Docker, http://127.0.0.1:8765 for a local install).`
    );
  }
  if (parsed.username || parsed.password) {
    // fetch refuses such a URL, and the service does not read one: its token is DYTOPO_TOKEN.
    throw new SkillError(
      `DYTOPO_URL "${shownUrl(url)}" holds a user name or password: remove them from the URL ` +
        "and put the service's token in DYTOPO_TOKEN (dytopo-swarm skill settings)."
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
    shown: shownUrl(url),
    origin: parsed.origin,
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
    return `DyTopo service at ${settings.shown} did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
  }
  const cause = error && error.cause ? error.cause.code || error.cause.message : null;
  return (
    `DyTopo service unreachable at ${settings.shown}${cause ? ` (${cause})` : ""}: start it with ` +
    "`dytopo serve` (for AnythingLLM in Docker: `dytopo serve --host 0.0.0.0 --token ...` and " +
    `DYTOPO_URL ${DEFAULT_URL}), or fix DYTOPO_URL in the dytopo-swarm skill settings.`
  );
}

function detailOf(body, text) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail !== undefined) return JSON.stringify(body.detail);
  return text;
}

class TooLarge extends Error {}

// The body as text, read as a stream: more than `limit` bytes (after decompression) stops the
// read, so a huge or endless body never sits in memory whole.
async function readBody(response, limit) {
  const declared = Number(response.headers.get("content-length"));
  if (!response.body) return "";
  if (declared > limit && !response.headers.get("content-encoding")) {
    await response.body.cancel().catch(() => {});
    throw new TooLarge();
  }
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new TooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString("utf8");
}

// fetch, following a redirect only within the service's own origin: the task and the token
// never go to another server, whatever the service (or something posing as it) answers.
async function send(settings, method, path, init) {
  let target = `${settings.url}${path}`;
  for (let hops = 0; ; hops += 1) {
    const response = await fetch(target, { ...init, method, redirect: "manual" });
    if (!REDIRECTS.has(response.status)) return response;
    await response.body?.cancel().catch(() => {});
    let next = null;
    try {
      next = new URL(response.headers.get("location") ?? "", target);
    } catch {
      next = null;
    }
    if (!next || next.origin !== settings.origin) {
      const where = next ? `to ${oneLine(next.origin, 200)}` : "to an unreadable address";
      throw new SkillError(
        `DyTopo service at ${settings.shown} redirected ${method} ${path} ${where}; ` +
          "a redirect to another origin is not followed (the task and token stay with " +
          "DYTOPO_URL): set DYTOPO_URL to the service's own address in the dytopo-swarm " +
          "skill settings."
      );
    }
    if (hops >= MAX_REDIRECTS) {
      throw new SkillError(
        `DyTopo service at ${settings.shown} redirected ${method} ${path} more than ` +
          `${MAX_REDIRECTS} times: check DYTOPO_URL in the dytopo-swarm skill settings.`
      );
    }
    target = next.href;
  }
}

// One HTTP exchange with the service: the parsed JSON body, or a SkillError whose message is
// what the chat should read.
async function call(settings, method, path, body, remainingMs) {
  const headers = { Accept: "application/json" };
  if (settings.token) headers.Authorization = `Bearer ${settings.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const limitMs = Math.max(1000, Math.min(REQUEST_TIMEOUT_MS, remainingMs ?? REQUEST_TIMEOUT_MS));
  let response;
  let text;
  try {
    response = await send(settings, method, path, {
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(limitMs),
    });
    text = await readBody(response, MAX_BODY_BYTES);
  } catch (error) {
    if (error instanceof SkillError) throw error;
    if (error instanceof TooLarge) {
      throw new SkillError(
        `DyTopo service at ${settings.shown} sent more than ` +
          `${MAX_BODY_BYTES / 1024 / 1024} MB for ${method} ${path}, far more than a DyTopo ` +
          "service sends; the skill stopped reading it: check DYTOPO_URL in the dytopo-swarm " +
          "skill settings."
      );
    }
    throw new SkillError(describeFetchError(error, settings), { cause: error });
  }
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (response.status === 401 || response.status === 403) {
    throw new SkillError(
      `DyTopo service at ${settings.shown} refused the request ` +
        `(HTTP ${response.status}): check DYTOPO_TOKEN in the dytopo-swarm skill settings; ` +
        "it must equal the token `dytopo serve` was started with (--token or DYTOPO_TOKEN)."
    );
  }
  if (response.status === 429) {
    const after = oneLine(response.headers.get("retry-after"), 20);
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
      `${settings.shown} did not answer like a DyTopo service (${method} ${path} gave ` +
        "no JSON object): check DYTOPO_URL in the dytopo-swarm skill settings."
    );
  }
  return parsed;
}

function roundLine(summary, maxRounds) {
  const edges = Array.isArray(summary.edges) ? summary.edges : [];
  const shown = edges.slice(0, 12).map((edge) => {
    // The service sends [sender, receiver]; an object form is read too.
    const [from, to] = Array.isArray(edge) ? edge : [edge?.source, edge?.target];
    return `${oneLine(from, 40)} -> ${oneLine(to, 40)}`;
  });
  if (edges.length > shown.length) shown.push(`and ${edges.length - shown.length} more`);
  const goal = oneLine(summary.goal, 200) || "(none)";
  const talk = shown.length ? shown.join(", ") : "no messages passed";
  const of = Number.isSafeInteger(maxRounds) && maxRounds > 0 ? `/${maxRounds}` : "";
  return `DyTopo round ${summary.round}${of} - goal: ${goal}; ${talk}`;
}

// The chat gets one line for each of the first MAX_ROUND_LINES rounds, then one line saying
// the rest are counted, and the count when the run ends: a run of 100,000 rounds (or a service
// that claims one) does not bury the chat.
class RoundLines {
  constructor(id, show) {
    this.id = id;
    this.show = show;
    this.last = 0;
    this.listed = 0;
    this.counted = 0;
  }

  feed(info) {
    const rounds = Array.isArray(info.rounds) ? info.rounds : [];
    for (const summary of rounds) {
      const number = summary?.round;
      if (!Number.isSafeInteger(number) || number <= this.last) continue;
      this.last = number;
      if (this.listed < MAX_ROUND_LINES) {
        this.listed += 1;
        this.show(roundLine(summary, info.max_rounds));
        continue;
      }
      if (this.counted === 0) {
        this.show(
          `DyTopo run ${this.id} has more than ${MAX_ROUND_LINES} rounds: the rest are not ` +
            "listed one by one; their count follows when the run ends."
        );
      }
      this.counted += 1;
    }
  }

  finish() {
    if (this.counted) {
      this.show(
        `DyTopo run ${this.id}: ${this.counted} more round(s) after the first ` +
          `${MAX_ROUND_LINES}, up to round ${this.last}, were not listed here.`
      );
    }
  }
}

// A final answer longer than MAX_ANSWER_CHARS is cut, with a note saying how much and where
// the whole text is.
function clipAnswer(answer, id, settings) {
  if (answer.length <= MAX_ANSWER_CHARS) return answer;
  let kept = answer.slice(0, MAX_ANSWER_CHARS);
  if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1); // not half a character
  const cut = answer.length - kept.length;
  return (
    `${kept}\n\n[dytopo-swarm: the final answer is ${answer.length} characters; the last ` +
    `${cut} were cut here. The whole answer is the final_answer of GET ` +
    `${settings.shown}/v1/runs/${encodeURIComponent(id)} and in the run's trace on the DyTopo ` +
    "service.]"
  );
}

function outcome(info, id, settings) {
  switch (info.status) {
    case "succeeded":
      if (typeof info.final_answer === "string" && info.final_answer.trim()) {
        return clipAnswer(info.final_answer, id, settings);
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
    default: // "interrupted", the last of TERMINAL
      return (
        `DyTopo run ${id} was interrupted (the service stopped during it)` +
        (info.resumable ? `; resume it with POST /v1/runs/${encodeURIComponent(id)}/resume.` : ".")
      );
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
  if (typeof id !== "string" || !/^[\x21-\x7e]{1,200}$/.test(id)) {
    throw new SkillError(
      `${settings.shown} accepted the run but returned no usable run id: ` +
        "is DYTOPO_URL a DyTopo service?"
    );
  }
  const path = `/v1/runs/${encodeURIComponent(id)}`;
  log(`dytopo-swarm: run ${id} submitted to ${settings.shown} (topology ${name})`);
  show(`DyTopo run ${id} started with topology "${name}"; rounds will show here as they finish.`);

  const lines = new RoundLines(id, show);
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
    lines.feed(info);
    if (TERMINAL.has(info.status)) {
      lines.finish();
      log(`dytopo-swarm: run ${id} ${info.status}`);
      return outcome(info, id, settings);
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

// Everything the chat and the log get passes redact(): no secret of the settings reaches them.
function guarded(ctx) {
  let secrets = [];
  try {
    secrets = secretsOf(ctx.runtimeArgs);
  } catch {
    secrets = [];
  }
  const clean = (text) => redact(text, secrets);
  const pass = (fn) => (typeof fn === "function" ? (text) => fn.call(ctx, clean(text)) : undefined);
  return { ctx, clean, introspect: pass(ctx.introspect), logger: pass(ctx.logger) };
}

module.exports.runtime = {
  handler: async function (args) {
    const ctx = this || {};
    const { clean, introspect, logger } = guarded(ctx);
    try {
      return clean(await runSwarm({ runtimeArgs: ctx.runtimeArgs, introspect, logger }, args));
    } catch (error) {
      if (error instanceof SkillError) return clean(error.message);
      const what = oneLine(error && error.message ? error.message : error);
      return clean(`dytopo-swarm failed unexpectedly: ${what}`);
    }
  },
};
