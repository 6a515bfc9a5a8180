// Sets the theme the user chose (light or dark) before the page paints, so a remembered choice
// never flashes the other one. Without a choice the stylesheet follows prefers-color-scheme.
(function () {
  try {
    var theme = localStorage.getItem('courier.theme');
    if (theme === 'light' || theme === 'dark') {
      document.documentElement.dataset.theme = theme;
    }
  } catch (_) {
    // Storage can be disabled; the system preference applies then.
  }
})();
