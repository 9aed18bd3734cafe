// Workbench enhancements; every page works without this file. Story text is only ever read
// from and written to text nodes (textContent), never parsed as markup.
(function () {
  "use strict";

  // Forms that ask before doing something drastic (revoking a person or a token).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  // One-time links and tokens: one click selects the whole value for copying.
  document.querySelectorAll("input.copy").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  // Passages lit while a code (or a coder's column) is hovered or focused.
  function lighter(attribute, holders, keyOf) {
    function set(key, on) {
      document.querySelectorAll(".seg").forEach(function (seg) {
        var keys = (seg.getAttribute(attribute) || "").split(" ");
        if (keys.indexOf(key) >= 0) { seg.classList.toggle("lit", on); }
      });
    }
    holders.forEach(function (holder) {
      var key = keyOf(holder);
      ["mouseenter", "focusin"].forEach(function (name) {
        holder.addEventListener(name, function () { set(key, true); });
      });
      ["mouseleave", "focusout"].forEach(function (name) {
        holder.addEventListener(name, function () { set(key, false); });
      });
    });
  }
  var sides = document.querySelectorAll(".side[data-coder]");
  lighter("data-mine", sides, function (side) { return side.getAttribute("data-coder"); });

  var form = document.getElementById("coding-form");
  if (!form) { return; }
  var exclude = document.getElementById("exclude");
  var reason = document.getElementById("exclusion_reason");
  var codesBox = document.getElementById("codes");
  function showExcluded() { codesBox.classList.toggle("is-excluded", exclude.checked); }
  var codes = form.querySelectorAll(".code[data-code]");
  codes.forEach(function (code) {
    var key = code.getAttribute("data-code");
    ["mouseenter", "focusin"].forEach(function (name) {
      code.addEventListener(name, function () { light(key, true); });
    });
    ["mouseleave", "focusout"].forEach(function (name) {
      code.addEventListener(name, function () { light(key, false); });
    });
  });
  function light(key, on) {
    document.querySelectorAll(".seg").forEach(function (seg) {
      var ev = (seg.getAttribute("data-ev") || "").split(" ");
      var mine = (seg.getAttribute("data-mine") || "").split(" ");
      if (ev.indexOf(key) >= 0 || mine.indexOf(key) >= 0) { seg.classList.toggle("lit", on); }
    });
  }

  // Unsaved changes are not lost by leaving the page by accident, nor when a save bounces
  // (a session that ended meanwhile): a draft stays in this tab's sessionStorage until the
  // story is saved, and is offered back on the same version of the story.
  var dirty = false;
  var draftKey = "cit-draft:" + window.location.pathname;
  var version = form.querySelector('input[name="if_match"]').value;
  function snapshot() {
    var boxes = [];
    form.querySelectorAll('input[type="checkbox"]').forEach(function (box) {
      if (box.checked) { boxes.push({ name: box.name, value: box.value }); }
    });
    var marked = [];
    form.querySelectorAll("ul[data-marked-for] input").forEach(function (box) {
      marked.push({ code: box.closest("ul").getAttribute("data-marked-for"), value: box.value,
                    text: box.parentElement.textContent });
    });
    return { version: version, boxes: boxes, marked: marked,
             reason: document.getElementById("exclusion_reason").value,
             note: document.getElementById("note").value };
  }
  function keep() {
    dirty = true;
    try { sessionStorage.setItem(draftKey, JSON.stringify(snapshot())); } catch (e) { /* full */ }
  }
  form.addEventListener("input", keep);
  form.addEventListener("change", keep);
  form.addEventListener("submit", function () { dirty = false; });
  var savedId = form.getAttribute("data-saved");
  if (savedId) { sessionStorage.removeItem("cit-draft:/work/stories/" + savedId); }
  var stored = null;
  try { stored = JSON.parse(sessionStorage.getItem(draftKey) || "null"); } catch (e) { stored = null; }
  if (stored && stored.version === version && form.getAttribute("data-fresh") === "1" &&
      JSON.stringify(stored) !== JSON.stringify(snapshot())) {
    var offer = document.getElementById("draft-offer");
    offer.hidden = false;
    offer.querySelector("button").addEventListener("click", function () {
      form.querySelectorAll('input[type="checkbox"]').forEach(function (box) {
        box.checked = stored.boxes.some(function (b) { return b.name === box.name && b.value === box.value; });
      });
      stored.marked.forEach(function (m) {
        var list = form.querySelector('ul[data-marked-for="' + m.code + '"]');
        if (!list || list.querySelector('input[value="' + m.value.replace(/"/g, "") + '"]')) { return; }
        var item = document.createElement("li");
        var label = document.createElement("label");
        label.className = "sentence-choice";
        var box = document.createElement("input");
        box.type = "checkbox"; box.name = "span"; box.value = m.value; box.checked = true;
        label.appendChild(box);
        label.appendChild(document.createTextNode(m.text));
        item.appendChild(label);
        list.appendChild(item);
      });
      document.getElementById("exclusion_reason").value = stored.reason;
      document.getElementById("note").value = stored.note;
      showExcluded();
      offer.hidden = true;
      dirty = true;
    });
  }
  window.addEventListener("beforeunload", function (event) {
    if (dirty) { event.preventDefault(); event.returnValue = ""; }
  });

  exclude.addEventListener("change", showExcluded);

  // Keyboard: digits tick codes, x excludes, s saves, n saves and opens the next, ? helps.
  var help = document.getElementById("keys-help");
  function typing(target) {
    if (!target || !target.tagName) { return false; }
    var tag = target.tagName.toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable) { return true; }
    return tag === "input" && ["checkbox", "radio", "button", "submit"].indexOf(target.type) < 0;
  }
  function submitWith(id) {
    var button = document.getElementById(id);
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && typing(event.target)) { event.target.blur(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var key = event.key;
    if (/^[0-9]$/.test(key)) {
      var box = form.querySelector('input[data-shortcut="' + key + '"]');
      if (box) { box.click(); box.focus(); event.preventDefault(); }
    } else if (key === "x" || key === "X") {
      exclude.click();
      if (exclude.checked) { reason.focus(); }
      event.preventDefault();
    } else if (key === "s" || key === "S") {
      event.preventDefault(); submitWith("save");
    } else if (key === "n" || key === "N") {
      event.preventDefault(); submitWith("save-next");
    } else if (key === "?") {
      help.open = !help.open;
      if (help.open) { help.querySelector("summary").focus(); }
      event.preventDefault();
    }
  });

  // Marking a passage by selecting text: offsets are counted in code points, as the server
  // counts them, over the answer's text nodes.
  function codePoints(text) { return Array.from(text).length; }
  function offsetIn(container, node, offset) {
    var walker = document.createTreeWalker(container, NodeFilter.SHOW_TEXT);
    var count = 0;
    while (walker.nextNode()) {
      var current = walker.currentNode;
      if (current === node) { return count + codePoints(current.data.slice(0, offset)); }
      count += codePoints(current.data);
    }
    // The selection ends on an element boundary: count the text before that child.
    if (node === container) {
      var before = 0;
      for (var i = 0; i < offset; i++) { before += codePoints(container.childNodes[i].textContent); }
      return before;
    }
    return null;
  }
  function answerOf(node) {
    var el = node.nodeType === 1 ? node : node.parentElement;
    return el ? el.closest(".answer-text") : null;
  }
  document.querySelectorAll(".js-only").forEach(function (el) { el.hidden = false; });
  form.querySelectorAll("button.mark-selection").forEach(function (button) {
    button.hidden = false;
    // Keep the selection when the button is pressed with the mouse.
    button.addEventListener("mousedown", function (event) { event.preventDefault(); });
    button.addEventListener("click", function () {
      var code = button.getAttribute("data-code");
      var selection = window.getSelection();
      var list = form.querySelector('ul[data-marked-for="' + code + '"]');
      if (!selection || selection.rangeCount === 0 || selection.isCollapsed) {
        say(list, "Select words in the story first, then press the button.");
        return;
      }
      var range = selection.getRangeAt(0);
      var container = answerOf(range.startContainer);
      if (!container || container !== answerOf(range.endContainer)) {
        say(list, "Select words within one answer of the story.");
        return;
      }
      var start = offsetIn(container, range.startContainer, range.startOffset);
      var end = offsetIn(container, range.endContainer, range.endOffset);
      if (start === null || end === null || end <= start) { return; }
      var field = container.getAttribute("data-field");
      var item = document.createElement("li");
      var label = document.createElement("label");
      label.className = "sentence-choice";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.name = "span";
      box.value = code + "|" + field + "|" + start + "|" + end;
      box.checked = true;
      label.appendChild(box);
      label.appendChild(document.createTextNode(" “" + Array.from(container.textContent).slice(start, end).join("") + "”"));
      item.appendChild(label);
      list.appendChild(item);
      var tick = document.getElementById("code-" + code);
      if (tick && !tick.checked) { tick.checked = true; }
      keep();
      selection.removeAllRanges();
      box.focus();
    });
  });
  function say(list, text) {
    var note = list.parentElement.querySelector(".mark-note");
    if (!note) {
      note = document.createElement("p");
      note.className = "mark-note hint";
      note.setAttribute("role", "status");
      list.parentElement.insertBefore(note, list);
    }
    note.textContent = text;
  }
})();
