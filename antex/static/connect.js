// "Connect your tools": one tab per tool with its snippets, the key masked unless asked for, and
// copy buttons that always copy the snippet with the full key.

import { $, announce, el } from "./dom.js";
import { maskKey } from "./key.js";
import { toolSnippets } from "./snippets.js";

const FIRST_TOOL = "claude-code";

export function renderTools({ key, models, showKey }) {
  const origin = window.location.origin;
  const real = toolSnippets(origin, key, models);
  const shown = toolSnippets(origin, showKey ? key : maskKey(key), models);
  // The tab that was open stays open across refreshes.
  const open = $("tool-tabs").querySelector('[aria-selected="true"]')?.id.replace(/^tab-/, "") || FIRST_TOOL;

  const tabs = [];
  const panels = [];
  shown.forEach((tool, i) => {
    const tabId = `tab-${tool.id}`;
    const panelId = `panel-${tool.id}`;
    const selected = tool.id === open;
    const tab = el("button", {
      type: "button", class: "tab", role: "tab", id: tabId, "aria-controls": panelId,
      "aria-selected": selected ? "true" : "false", tabindex: selected ? "0" : "-1", text: tool.label,
    });
    tab.addEventListener("click", () => selectTool(tool.id));
    tab.addEventListener("keydown", (event) => onTabKey(event, i, shown));
    tabs.push(tab);

    const panel = el("div", { class: "tab-panel", role: "tabpanel", id: panelId, "aria-labelledby": tabId, tabindex: "0" });
    panel.hidden = !selected;
    for (const line of tool.intro) panel.append(el("p", { text: line }));
    tool.snippets.forEach((snippet, j) => {
      const copy = el("button", { type: "button", class: "button button-quiet button-small copy", text: "Copy" });
      copy.setAttribute("aria-label", `Copy ${tool.label}: ${snippet.title}`);
      copy.addEventListener("click", () => copySnippet(copy, real[i].snippets[j].text));
      panel.append(el("div", { class: "snippet" },
        el("div", { class: "snippet-head" }, el("span", { class: "snippet-title", text: snippet.title }), copy),
        el("pre", {}, el("code", { text: snippet.text }))));
    });
    panels.push(panel);
  });
  $("tool-tabs").replaceChildren(...tabs);
  $("tool-panels").replaceChildren(...panels);
  $("base-url").textContent = origin;
  const toggle = $("toggle-key");
  toggle.setAttribute("aria-pressed", showKey ? "true" : "false");
  toggle.textContent = showKey ? "Hide key" : "Show key";
}

// Nothing that shows the key stays in the page.
export function clearTools() {
  $("tool-tabs").replaceChildren();
  $("tool-panels").replaceChildren();
}

function selectTool(id, focus = false) {
  for (const tab of $("tool-tabs").children) {
    const selected = tab.id === `tab-${id}`;
    tab.setAttribute("aria-selected", selected ? "true" : "false");
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  for (const panel of $("tool-panels").children) panel.hidden = panel.id !== `panel-${id}`;
}

// Arrow keys, Home and End move between tabs (the WAI-ARIA tabs pattern).
function onTabKey(event, index, tools) {
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tools.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const next = (moves[event.key] + tools.length) % tools.length;
  selectTool(tools[next].id, true);
}

// The Clipboard API where the page is a secure context, else a selection in a hidden textarea
// (plain http on a LAN address is not a secure context).
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Fall through to the selection-based copy.
    }
  }
  const area = el("textarea", { class: "offscreen", readonly: "", "aria-hidden": "true", tabindex: "-1" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

async function copySnippet(button, text) {
  const ok = await copyText(text);
  button.dataset.copied = ok ? "true" : "false";
  button.textContent = ok ? "Copied" : "Select and copy";
  announce(ok ? "Copied to the clipboard, with your full key." : "Copying failed: select the text and copy it.");
  window.setTimeout(() => {
    button.textContent = "Copy";
    delete button.dataset.copied;
  }, 2000);
}
