// camflow stream list (/?token=): every live stream's latest thumbnail in a grid, each picture
// reloaded every THUMB_MS, and the list itself (streams that came or went, viewers) every LIST_MS.
(function () {
  "use strict";
  const THUMB_MS = 5000;
  const LIST_MS = 30000;
  let round = 0;
  function refreshThumbs() {
    round += 1;
    for (const img of document.querySelectorAll(".card img")) {
      const base = img.dataset.src || img.getAttribute("src");
      img.dataset.src = base;
      const next = new Image(); // swapped in once loaded: no blank card while it loads
      next.onload = function () { img.src = next.src; img.classList.remove("missing"); };
      next.src = base + "&r=" + round;
    }
  }
  async function refreshList() {
    try {
      const resp = await fetch(location.href, { cache: "no-store" });
      if (!resp.ok) return;
      const page = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = page.querySelector("main");
      if (fresh) document.querySelector("main").replaceWith(fresh);
    } catch (err) {
      // the edge restarting: the next round tries again
    }
  }
  setInterval(refreshThumbs, THUMB_MS);
  setInterval(refreshList, LIST_MS);
})();
