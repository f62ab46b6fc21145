// The person's Antex key: checked before it is sent, masked when shown, kept in this tab only.
//
// The key lives in sessionStorage (closing the tab forgets it) and leaves the page only in the
// `x-api-key` header of same-origin requests (api.js).

const KEY_STORAGE = "antex.key";

// null when the key looks right, else what to tell the person.
export function validateKey(key) {
  if (!key) return "Paste your key first.";
  if (key.startsWith("sk-ant-")) return "That is an Anthropic key. Paste the Antex key you were given (it starts with sk_live_).";
  if (!key.startsWith("sk_live_")) return "Antex keys start with sk_live_.";
  if (/\s/.test(key)) return "The key has a space in it: paste it again, on its own.";
  return null;
}

// "sk_live_AbCd••••••••": enough to recognise the key, not enough to use it.
export function maskKey(key) {
  return `${key.slice(0, 12)}••••••••`;
}

export function storedKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

// storeKey(null) forgets it.
export function storeKey(key) {
  try {
    if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
    else window.sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key then lasts as long as the page.
  }
}
