"""What the page carries besides its widgets: the CSS, the scripts it runs in the browser, and
the figures' alt text."""
from __future__ import annotations

import json

# Adversarial images are tiny at model resolution: show them large, without smoothing. The
# figures are drawn on white; the dark theme inverts them (hue-rotated back, so colours keep).
# On a phone the three predictions stay side by side, so they fit the screen with the status.
CSS = """
.pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important; object-fit: contain; }
.dark .figure img { filter: invert(0.88) hue-rotate(180deg); }
#results-row { flex-wrap: nowrap !important; gap: 6px; }
#results-row > div { min-width: 0 !important; }
#lesson-row button { white-space: normal; }
#lesson-images img { image-rendering: pixelated; }
/* A lesson's text reads from the back of a classroom. */
#lesson-text { font-size: 1.15rem; }
#lesson-result { font-size: 1.05rem; }
/* Every example visible, its caption whole. */
#examples .grid-wrap { overflow: visible !important; max-height: none !important; }
#examples .caption-label, #lesson-images .caption-label { white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; max-width: none !important; }
/* The audit's verdicts: FLAGGED stands out. */
#audit-table .flagged { color: #ffffff; background: #c62828; font-weight: 700; padding: 2px 6px;
  border-radius: 4px; }
@media (max-width: 640px) {
  #results-row .output-class { font-size: var(--text-md) !important; padding: 4px !important; }
  #results-row .label-text, #results-row .confidence-set { font-size: var(--text-xs) !important; }
  .prose pre, .prose code { white-space: pre-wrap !important; word-break: break-word; }
  #status { font-size: var(--text-sm); }
  #lesson-text { font-size: 1rem; }
  /* Block labels above their content, not floating over it: the big predictions and the figures'
     captions stay whole. */
  #results-row [data-testid=block-label], .figure [data-testid=block-label] {
    position: static !important; border-radius: 0 !important; margin-bottom: 4px; }
  #results-row [data-testid=block-label] > span { display: none; }
  #results-row .confidence-set .line { display: none; }   /* room for the percentages */
  #results-row .confidence-set dl { justify-content: space-between; gap: 2px; }
}
"""
# What each figure shows, for screen readers (Gradio's own alt text says "undefined plot ...").
ALT = {"prob-plot": "Line chart: each class's probability at every purification step, for the attacked and "
                    "the clean input; the clean prediction is the thick blue line.",
       "cos-plot": "Line chart: cosine between the image embedding and the blank target at every purification "
                   "step; a zig-zag is the 2-cycle.",
       "rot-plot": "Circle: the purification drawn exactly in the plane of the embedding and the blank, each "
                   "step a numbered point with its angle to the blank.",
       "map-plot": "Map: the purification path of each embedding in a 2-D projection, with numbered class "
                   "landmarks and the blank target as a star.",
       "lesson-plot": "The lesson's figure: the purification drawn exactly in the plane of the embedding and the "
                      "blank, each step a numbered point with its angle to the blank."}
PAGE_JS = """() => {
  const alt = %s;
  const fix = () => { for (const [id, text] of Object.entries(alt)) {
      const img = document.querySelector('#' + id + ' img'); if (img && img.alt !== text) img.alt = text; } };
  new MutationObserver(fix).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                     attributeFilter: ['src']});
  fix();
}""" % json.dumps(ALT)
# A phone's screen (the CSS breakpoint above): the step plots are drawn with stacked panels.
NARROW_JS = "() => window.matchMedia('(max-width: 640px)').matches"
SCROLL_TO_STATUS = "() => { document.getElementById('run-row')?.scrollIntoView({block: 'start'}); }"
SCROLL_TO_AUDIT = "() => { document.getElementById('audit-panel')?.scrollIntoView({block: 'start'}); }"
SCROLL_TO_LESSON = "() => { document.getElementById('lesson-stage')?.scrollIntoView({block: 'start'}); }"


def save_image_js(container: str, name: str) -> str:
    """A click that saves the image shown inside `container` (a CSS selector) as `name`: the PNG the
    page already holds, so an export costs the server nothing and is exactly what is on screen."""
    return ("() => { const img = [...document.querySelectorAll(%s)].find(i => i.offsetParent !== null);"
            " if (!img) return; const a = document.createElement('a'); a.href = img.src; a.download = %s;"
            " document.body.appendChild(a); a.click(); a.remove(); }" % (json.dumps(container), json.dumps(name)))
