// What to paste to point each tool at this gateway: the same set-ups as README.md's "Connect your
// tools" section, filled in with this gateway's origin, the person's key and the models their key
// may use (from /v1/models). Pure: data in, text out.

const DEFAULT_MODEL = "claude-sonnet-4-6";
const DEFAULT_MODEL_NAME = "Claude Sonnet 4.6";
const CODEX_CATALOG = "~/.codex/antex-models.json";

// The model the snippets use (Sonnet 4.6 when the key may use it, else another Sonnet, else the
// newest), up to twelve ids for OpenCode's list, and each id's display name.
function chosenModels(models) {
  const ids = (models || []).map((m) => m.id);
  const names = Object.fromEntries((models || []).map((m) => [m.id, m.display_name || m.id]));
  names[DEFAULT_MODEL] ||= DEFAULT_MODEL_NAME;
  const main = ids.includes(DEFAULT_MODEL) ? DEFAULT_MODEL : ids.find((id) => id.includes("sonnet")) || ids[0] || DEFAULT_MODEL;
  return { main, ids: ids.length ? ids.slice(0, 12) : [DEFAULT_MODEL], names };
}

// JSON on one line with a space after ":" and ",", as README.md writes it: {"mode": "tokens", "limit": 10000}
function inlineJson(value) {
  if (Array.isArray(value)) return `[${value.map(inlineJson).join(", ")}]`;
  if (value && typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${inlineJson(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}

// A TOML basic string: JSON's escapes are TOML's.
const tomlString = (text) => JSON.stringify(String(text));

function codexConfig(origin, model) {
  return [
    `model = ${tomlString(model)}`,
    `model_provider = "antex"`,
    `model_catalog_json = ${tomlString(CODEX_CATALOG)}   # what Codex should know of Claude (below)`,
    "",
    "[model_providers.antex]",
    `name = "Antex"`,
    `base_url = ${tomlString(`${origin}/v1`)}`,
    `env_key = "ANTEX_API_KEY"`,
    `wire_api = "responses"`,
  ].join("\n");
}

// Codex offers apply_patch, and compacts long sessions in time, only for models its catalog
// describes. Laid out line by line as in README.md.
function codexCatalog(slug, displayName) {
  const lines = [
    { slug, display_name: displayName, description: "Claude through Antex" },
    { priority: 1, visibility: "list", supported_in_api: true },
    { default_reasoning_level: "medium" },
    { supported_reasoning_levels: [{ effort: "medium", description: "Extended thinking" }] },
    { shell_type: "shell_command", apply_patch_tool_type: "freeform" },
    { supports_reasoning_summaries: false, support_verbosity: false, supports_parallel_tool_calls: true },
    { truncation_policy: { mode: "tokens", limit: 10000 }, context_window: 200000 },
    { experimental_supported_tools: [], input_modalities: ["text", "image"] },
    { base_instructions: "You are a coding agent. Edit files with apply_patch." },
  ].map((fields) => `  ${inlineJson(fields).slice(1, -1)}`);
  return `{"models": [{\n${lines.join(",\n")}\n}]}`;
}

function claudeCode(origin, key) {
  return {
    id: "claude-code",
    label: "Claude Code",
    intro: [
      "Set two environment variables, then start Claude Code. The first time, it asks whether to use this API key: answer yes.",
      "To make it permanent, put the same two variables in Claude Code's settings file (on Windows: %USERPROFILE%\\.claude\\settings.json).",
    ],
    snippets: [
      { title: "Shell (macOS, Linux)", text: `export ANTHROPIC_BASE_URL=${origin}\nexport ANTHROPIC_API_KEY=${key}\nclaude` },
      { title: "PowerShell (Windows)", text: `$env:ANTHROPIC_BASE_URL = "${origin}"\n$env:ANTHROPIC_API_KEY = "${key}"\nclaude` },
      { title: "~/.claude/settings.json", text: JSON.stringify({ env: { ANTHROPIC_BASE_URL: origin, ANTHROPIC_API_KEY: key } }, null, 2) },
    ],
  };
}

function codex(origin, key, { main, names }) {
  return {
    id: "codex",
    label: "Codex CLI",
    intro: [
      "Codex speaks the OpenAI Responses API, which this gateway serves at /v1. Add a provider to its config and keep the key in an environment variable.",
      "The model catalog tells Codex Claude's context window and that it edits files with apply_patch: without it, Codex offers no apply_patch tool.",
    ],
    snippets: [
      { title: "~/.codex/config.toml", text: codexConfig(origin, main) },
      { title: CODEX_CATALOG, text: codexCatalog(main, names[main] || main) },
      { title: "Shell", text: `export ANTEX_API_KEY=${key}\ncodex` },
    ],
  };
}

function opencode(origin, key, { main, ids, names }) {
  const config = {
    $schema: "https://opencode.ai/config.json",
    provider: {
      antex: {
        npm: "@ai-sdk/anthropic",
        name: "Antex",
        options: { baseURL: `${origin}/v1`, apiKey: "{env:ANTEX_API_KEY}" },
        models: Object.fromEntries(ids.map((id) => [id, { name: names[id] || id }])),
      },
    },
    model: `antex/${main}`,
  };
  return {
    id: "opencode",
    label: "OpenCode",
    intro: [
      "Add Antex as a provider in opencode.json (in your project, or ~/.config/opencode/opencode.json for every project). It uses the Anthropic Messages API.",
      "The file names the key's environment variable, not the key, so it is safe to commit.",
    ],
    snippets: [
      { title: "opencode.json", text: JSON.stringify(config, null, 2) },
      { title: "Shell", text: `export ANTEX_API_KEY=${key}\nopencode` },
    ],
  };
}

function sdksAndCurl(origin, key, { main }) {
  return {
    id: "curl",
    label: "SDKs and curl",
    intro: ["Any HTTP client works: the Anthropic Messages API and the OpenAI Chat Completions API, with either key header."],
    snippets: [
      {
        title: "Python: Anthropic and OpenAI SDKs",
        text: [
          "import anthropic, openai",
          `anthropic.Anthropic(base_url=${JSON.stringify(origin)}, api_key=${JSON.stringify(key)})`,
          `openai.OpenAI(base_url=${JSON.stringify(`${origin}/v1`)}, api_key=${JSON.stringify(key)})`,
        ].join("\n"),
      },
      {
        title: "Anthropic Messages: /v1/messages",
        text: [
          `curl ${origin}/v1/messages \\`,
          `  -H "x-api-key: ${key}" \\`,
          `  -H "anthropic-version: 2023-06-01" \\`,
          `  -H "content-type: application/json" \\`,
          `  -d '{"model": "${main}", "max_tokens": 1024,`,
          `       "messages": [{"role": "user", "content": "hello"}]}'`,
        ].join("\n"),
      },
      {
        title: "OpenAI Chat Completions: /v1/chat/completions",
        text: [
          `curl ${origin}/v1/chat/completions \\`,
          `  -H "Authorization: Bearer ${key}" \\`,
          `  -H "content-type: application/json" \\`,
          `  -d '{"model": "${main}", "messages": [{"role": "user", "content": "hello"}]}'`,
        ].join("\n"),
      },
      { title: "Your usage: /v1/usage", text: `curl ${origin}/v1/usage \\\n  -H "x-api-key: ${key}"` },
    ],
  };
}

// [{id, label, intro: [paragraph], snippets: [{title, text}]}], one per tab. `models` is the
// /v1/models list, or null before it is known.
export function toolSnippets(origin, key, models) {
  const chosen = chosenModels(models);
  return [claudeCode(origin, key), codex(origin, key, chosen), opencode(origin, key, chosen), sdksAndCurl(origin, key, chosen)];
}
