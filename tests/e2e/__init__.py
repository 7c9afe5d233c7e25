"""Browser end-to-end checks of the studio (headless Debian Chromium driven by Playwright)."""
