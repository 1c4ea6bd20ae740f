// Tiny DOM helpers: no framework, just typed element construction.

type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;
type Child = Node | string | number | null | undefined | false;

/** h("button", {class: "x", onclick: fn}, "Label") builds an element.
 *  Attributes whose value is null, undefined or false are left out; true
 *  gives an empty attribute; keys starting with "on" add listeners. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (k === "value" && "value" in el) {
        (el as HTMLInputElement).value = String(v);
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c === null || c === undefined || c === false) continue;
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Sets text only when it changed (cheap to call every second). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** Toggles an attribute: present (with value) or absent. */
export function setAttr(el: Element, name: string, value: string | null): void {
  if (value === null) el.removeAttribute(name);
  else if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

/** A screen-reader-only live region message. */
let announcer: HTMLElement | null = null;
export function announce(msg: string): void {
  if (!announcer) {
    announcer = h("div", { class: "sr-only", "aria-live": "polite", role: "status" });
    document.body.append(announcer);
  }
  announcer.textContent = "";
  // A new text node on the next tick makes screen readers repeat equal messages.
  setTimeout(() => announcer && (announcer.textContent = msg), 30);
}
