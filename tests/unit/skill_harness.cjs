// Loads an AnythingLLM agent skill the way AnythingLLM's loader does and calls it once.
//
//   node skill_harness.cjs PLUGINS_DIR HUB_ID ARGS_JSON [EXTRA_RUNTIME_ARGS_JSON]
//
// Prints one JSON object: what the loader saw (active skills, the tool definition the model
// gets, runtimeArgs) and what the call gave (result, its type, introspect and logger calls,
// or the exception if the handler threw; the process's peak memory). The functions marked
// "loader" below are copied from anything-llm server/utils/agents/imported.js (ImportedPlugin),
// utils/files (isWithin, normalizePath) and aibitat/index.js (`fn.handler(args)`), commit
// 72aabbd15; only the storage path and the aibitat object are stand-ins. JSON.parse stands in
// for safeJsonParse: stricter.
"use strict";
const fs = require("fs");
const path = require("path");

const [pluginsPath, hubIdArg, argsJson, extraJson] = process.argv.slice(2);

// loader: utils/files isWithin
function isWithin(outer, inner) {
  const resolvedOuter = path.resolve(outer);
  const resolvedInner = path.resolve(inner);
  const rel = path.relative(resolvedOuter, resolvedInner);
  if (rel === "") return false;
  return !rel.startsWith(`..${path.sep}`) && rel !== ".." && !path.isAbsolute(rel);
}

// loader: utils/files normalizePath
function normalizePath(filepath = "") {
  const result = path
    .normalize(filepath.trim())
    .replace(/^(\.\.(\/|\\|$))+/, "")
    .trim();
  if (["..", ".", "/"].includes(result)) throw new Error("Invalid path.");
  return result;
}

function isValidLocation(pathToValidate) {
  if (!isWithin(pluginsPath, pathToValidate)) return false;
  if (!fs.existsSync(pathToValidate)) return false;
  return true;
}

// loader: ImportedPlugin.activeImportedPlugins
function activeImportedPlugins() {
  const plugins = [];
  for (const folder of fs.readdirSync(path.resolve(pluginsPath))) {
    const configLocation = path.resolve(pluginsPath, normalizePath(folder), "plugin.json");
    if (!isValidLocation(configLocation)) continue;
    const config = JSON.parse(fs.readFileSync(configLocation, "utf8"));
    if (config.active) plugins.push(`@@${config.hubId}`);
  }
  return plugins;
}

// loader: ImportedPlugin.validateImportedPluginHandler
function validateImportedPluginHandler(hubId) {
  return isValidLocation(path.resolve(pluginsPath, normalizePath(hubId), "handler.js"));
}

// loader: ImportedPlugin (constructor, loadPluginByHubId, parseCallOptions, plugin)
class ImportedPlugin {
  constructor(config) {
    this.config = config;
    this.handlerLocation = path.resolve(pluginsPath, normalizePath(this.config.hubId), "handler.js");
    if (!isWithin(pluginsPath, this.handlerLocation))
      throw new Error("Plugin handler does not pass path validation.");
    delete require.cache[require.resolve(this.handlerLocation)];
    this.handler = require(this.handlerLocation);
    this.name = config.hubId;
  }

  static loadPluginByHubId(hubId) {
    const configLocation = path.resolve(pluginsPath, normalizePath(hubId), "plugin.json");
    if (!isValidLocation(configLocation)) return;
    return new ImportedPlugin(JSON.parse(fs.readFileSync(configLocation, "utf8")));
  }

  parseCallOptions() {
    const callOpts = {};
    if (!this.config.setup_args || typeof this.config.setup_args !== "object") return callOpts;
    for (const [param, definition] of Object.entries(this.config.setup_args)) {
      if (definition.required && !definition?.value) continue;
      callOpts[param] = definition.value || definition.default || null;
    }
    return callOpts;
  }

  plugin(runtimeArgs = {}) {
    const customFunctions = this.handler.runtime;
    return {
      runtimeArgs,
      name: this.name,
      config: this.config,
      setup(aibitat) {
        aibitat.function({
          super: aibitat,
          name: this.name,
          config: this.config,
          runtimeArgs: this.runtimeArgs,
          description: this.config.description,
          logger: aibitat?.handlerProps?.log || console.log,
          introspect: aibitat?.introspect || console.log,
          runtime: "docker",
          examples: this.config.examples ?? [],
          parameters: {
            $schema: "http://json-schema.org/draft-07/schema#",
            type: "object",
            properties: this.config.entrypoint.params ?? {},
            additionalProperties: false,
          },
          ...customFunctions,
        });
      },
    };
  }
}

async function main() {
  const report = { introspect: [], logs: [] };
  const functions = new Map();
  const aibitat = {
    handlerProps: { log: (text) => report.logs.push(String(text)) },
    introspect: (text) => report.introspect.push({ at: Date.now(), text: String(text) }),
    function(config) {
      functions.set(config.name, config);
      return this;
    },
  };
  report.active = activeImportedPlugins();
  const loadable = `@@${hubIdArg}`;
  if (!report.active.includes(loadable)) throw new Error(`${loadable} is not an active skill`);
  // loader: agents/index.js, the `@@` branch of #attachPlugins
  const hubId = loadable.replace("@@", "");
  if (!validateImportedPluginHandler(hubId)) throw new Error(`no handler.js for ${hubId}`);
  const plugin = ImportedPlugin.loadPluginByHubId(hubId);
  const callOpts = plugin.parseCallOptions();
  if (extraJson) Object.assign(callOpts, JSON.parse(extraJson));
  plugin.plugin(callOpts).setup(aibitat);
  const fn = functions.get(hubId);
  report.tool = { name: fn.name, description: fn.description, parameters: fn.parameters };
  report.runtimeArgs = fn.runtimeArgs;
  try {
    // aibitat/index.js: `const result = await fn.handler(args);` -- `this` is fn.
    const result = await fn.handler(JSON.parse(argsJson));
    report.result = result === undefined ? null : result;
    report.resultType = typeof result;
  } catch (error) {
    report.threw = String(error && error.stack ? error.stack : error);
  }
  // The peak memory of this process's own address space (VmHWM): getrusage's maxRSS also
  // counts the parent's size at fork (Linux keeps it across exec), which a long test run grows.
  const status = require("fs").readFileSync("/proc/self/status", "utf8");
  report.maxRssMb = Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) / 1024;
  process.stdout.write(JSON.stringify(report));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(2);
});
