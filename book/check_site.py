"""Open every page of the built course website in headless Chromium and check it.

``python book/check_site.py build/book/html`` (what ``make book-check`` runs) serves the folder
over HTTP on a free local port, loads every HTML page in Chromium (through Selenium and
Debian's ``chromium-driver``) and checks that:

- the page loads without an error in the browser console (a missing script or stylesheet, a
  JavaScript exception, a 404 for any resource);
- every image on it is present and decoded (``naturalWidth > 0``): the notebooks' pictures;
- following links from the start page reaches every chapter and every notebook page.

Exit status 0 when all holds; otherwise each problem is printed and the status is 1.
"""
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

START = "book/index.html"


def serve(folder):
    """A quiet HTTP server for ``folder`` on a free port, in a daemon thread; returns its URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def browser():
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def check_page(driver, url):
    """Problems of one page: console errors and missing images; and the site links on it."""
    driver.get(url)
    problems = [f"console: {e['message']}" for e in driver.get_log("browser")
                if e["level"] == "SEVERE"]
    broken = driver.execute_script(
        "return Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    problems += [f"image missing: {src}" for src in broken]
    links = driver.execute_script("return Array.from(document.links).map(a => a.href)")
    return problems, links


def main(folder):
    folder = Path(folder)
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html")
                   if "_static" not in p.parts)
    expected = {p for p in pages if p.startswith(("chapters/", "notebooks/"))}
    if not expected:
        print(f"check_site: {folder} holds no chapter or notebook pages: build the site first")
        return 1
    base = serve(folder)
    driver = browser()
    failures, reached, queue = {}, set(), [START]
    try:
        for page in pages:                                # every page: console and images
            problems, _ = check_page(driver, urljoin(base, page))
            if problems:
                failures[page] = problems
        while queue:                                      # navigation from the start page
            page = queue.pop()
            if page in reached:
                continue
            reached.add(page)
            _, links = check_page(driver, urljoin(base, page))
            for link in links:
                target = urlparse(urldefrag(link)[0])
                path = target.path.lstrip("/")
                if link.startswith(base) and path.endswith(".html") and path not in reached:
                    queue.append(path)
    finally:
        driver.quit()
    unreached = sorted(expected - reached)
    for page, problems in failures.items():
        for problem in problems:
            print(f"{page}: {problem}")
    if unreached:
        print(f"not reachable from {START}: {', '.join(unreached)}")
    print(f"check_site: {len(pages)} pages, {len(expected)} chapter and notebook pages, "
          f"{len(reached)} reached from {START}, {len(failures)} with problems")
    return 1 if failures or unreached else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/book/html"))
