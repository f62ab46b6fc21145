// Building the page: elements from tag, attributes and children, and screen-reader announcements.
//
// Everything shown is set with textContent or built here with DOM APIs: no data ever goes through
// innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

export function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
}

// el("p", { class: "note", text: "Hello" }, child, ...): null, undefined and false children are skipped.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  return node;
}

// Said once by screen readers through the page's polite live region.
export function announce(message) {
  const live = $("live");
  live.textContent = "";
  window.setTimeout(() => { live.textContent = message; }, 50);
}
