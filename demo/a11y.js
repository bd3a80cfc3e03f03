() => {
  // Accessibility fixes for markup Gradio renders itself (checked by axe-core in
  // tests/browser/test_accessibility.py), re-applied whenever the page changes:
  //  - empty image / file / gallery boxes carry aria-label="Empty value" on a plain div,
  //    which ARIA forbids ("aria-prohibited-attr"): they become role="img";
  //  - gallery thumbnails are named "Thumbnail 1 of 4" while they show a caption
  //    ("label-content-name-mismatch"): the name starts with the caption.
  const fix = () => {
    for (const el of document.querySelectorAll('div[aria-label]:not([role])')) el.setAttribute('role', 'img');
    for (const b of document.querySelectorAll('button[aria-label^="Thumbnail "]')) {
      const text = (b.innerText || '').trim().split('\n')[0];
      const name = b.getAttribute('aria-label');
      if (text && !name.includes(text)) b.setAttribute('aria-label', `${text} (${name.toLowerCase()})`);
    }
  };
  fix();
  new MutationObserver(fix).observe(document.body, { subtree: true, childList: true });
}
