// tilebox console: the only script. A running job's page re-reads its live part (state,
// progress, diagram, tasks) until the job is final; everything else is plain server-rendered HTML.
(function () {
  "use strict";

  async function refresh() {
    const live = document.getElementById("live");
    if (!live || live.dataset.final === "true") {
      return;
    }
    const started = performance.now();
    let delay = 1000;
    try {
      const response = await fetch(live.dataset.liveUrl, { cache: "no-store" });
      if (response.status === 404) {
        return; // the job is gone: nothing more to follow
      }
      if (response.ok) {
        replace(live, await response.text());
      } else {
        delay = 3000;
      }
    } catch (error) {
      delay = 3000; // the console restarting, or the network: try again a little later
    }
    // A job of 10,000 tasks takes a while to read: poll at most a quarter of the time.
    setTimeout(refresh, Math.max(delay, 4 * (performance.now() - started)));
  }

  function replace(live, html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const next = template.content.querySelector("#live");
    if (!next) {
      return;
    }
    const scroll = live.querySelector(".diagram-scroll");
    const position = scroll ? [scroll.scrollLeft, scroll.scrollTop] : null;
    live.replaceWith(next);
    const nextScroll = next.querySelector(".diagram-scroll");
    if (position && nextScroll) {
      nextScroll.scrollLeft = position[0];
      nextScroll.scrollTop = position[1];
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.getElementById("live")) {
      setTimeout(refresh, 1000);
    }
  });
})();
