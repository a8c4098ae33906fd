// report.html's script (inlined into the page by analysis/report.py): tooltips, linked highlighting, and the
// sortable, filterable table of cells. No framework, nothing loaded. Text from the run is only ever set with
// textContent, never parsed as HTML.
"use strict";
(function () {
  const tip = document.getElementById("tip");
  let lit = [];

  // Everything with the same data-cell (a cell on every panel of a diagram, and its table row) lights up together.
  function light(id) {
    lit.forEach((el) => el.classList.remove("hl"));
    lit = id ? Array.from(document.querySelectorAll('[data-cell="' + CSS.escape(id) + '"]')) : [];
    lit.forEach((el) => el.classList.add("hl"));
  }

  function place(ev) {
    const pad = 14;
    const box = tip.getBoundingClientRect();
    let x = ev.clientX + pad;
    let y = ev.clientY + pad;
    if (x + box.width > window.innerWidth) x = Math.max(0, ev.clientX - pad - box.width);
    if (y + box.height > window.innerHeight) y = Math.max(0, ev.clientY - pad - box.height);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  document.addEventListener("mouseover", (ev) => {
    const target = ev.target.closest("[data-tip]");
    const row = target ? null : ev.target.closest("tr[data-cell]");
    if (target) {
      tip.textContent = target.dataset.tip;
      tip.hidden = false;
      place(ev);
    } else {
      tip.hidden = true;
    }
    const source = target || row;
    light(source ? source.dataset.cell : null);
  });
  document.addEventListener("mousemove", (ev) => {
    if (!tip.hidden) place(ev);
  });

  // Clicking a panel cell brings its row of the table into view.
  document.addEventListener("click", (ev) => {
    const cell = ev.target.closest("svg [data-cell]");
    if (!cell) return;
    const row = document.querySelector('tr[data-cell="' + CSS.escape(cell.dataset.cell) + '"]');
    if (!row) return;
    if (row.hidden) return; // filtered out: leave the filter as the reader set it
    row.scrollIntoView({ block: "center" });
    row.classList.remove("found");
    void row.offsetWidth; // restart the highlight animation
    row.classList.add("found");
  });

  // --- The table of cells ---------------------------------------------------------------------------------------

  // A cell's sort and filter value: its raw number (data-v, '' when missing) or its text.
  function valueOf(row, col) {
    const td = row.cells[col];
    return td.dataset.v !== undefined ? td.dataset.v : td.textContent.trim();
  }

  function sortRows(body, col, numeric, dir) {
    const sign = dir === "ascending" ? 1 : -1;
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = valueOf(a, col);
      const y = valueOf(b, col);
      const order = a.dataset.order - b.dataset.order; // ties keep the original order
      if (x === "" || y === "") return (x === "") - (y === "") || order; // missing last, both ways
      const d = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return sign * d || order;
    });
    body.append(...rows);
  }

  // A filter term: "key<op>value" on a column (op one of <= >= < > =), else words the row's text must contain.
  const TERM = /^([^<>=\s]+)(<=|>=|<|>|=)(.+)$/;

  function matcher(term, columns) {
    const m = TERM.exec(term);
    const col = m ? columns.findIndex((c) => c.key === m[1]) : -1;
    if (col < 0) {
      const words = term.toLowerCase();
      return (row) => row.textContent.toLowerCase().includes(words);
    }
    const op = m[2];
    const want = m[3];
    if (columns[col].numeric && want.trim() !== "" && !Number.isNaN(Number(want))) {
      const w = Number(want);
      const cmp = {
        "<": (v) => v < w, ">": (v) => v > w, "<=": (v) => v <= w, ">=": (v) => v >= w, "=": (v) => v === w,
      };
      return (row) => {
        const v = valueOf(row, col);
        return v !== "" && cmp[op](Number(v));
      };
    }
    const text = want.toLowerCase();
    if (op !== "=") return () => false; // an order on text: nothing matches, and the count says so
    return (row) => row.cells[col].textContent.trim().toLowerCase() === text;
  }

  function setUpTable(view) {
    const table = view.querySelector("table.cells");
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    const columns = heads.map((th) => ({ key: th.dataset.key, numeric: th.dataset.type === "num" }));
    Array.from(body.rows).forEach((row, k) => (row.dataset.order = k));

    heads.forEach((th, col) => {
      th.querySelector("button").addEventListener("click", () => {
        const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", dir);
        sortRows(body, col, columns[col].numeric, dir);
      });
    });

    const input = view.querySelector("input.filter");
    const shown = view.querySelector("output.shown");
    input.addEventListener("input", () => {
      const tests = input.value.trim().split(/\s+/).filter(Boolean).map((t) => matcher(t, columns));
      let n = 0;
      for (const row of body.rows) {
        row.hidden = !tests.every((test) => test(row));
        if (!row.hidden) n += 1;
      }
      shown.textContent = n + " of " + body.rows.length + " cells";
    });
  }

  document.querySelectorAll(".cells-view").forEach(setUpTable);
})();
