"""The platform end to end in a real browser, on the README's first command (`aiinfn-dev demo`).

A headless Chromium logs alice in, reads live availability on the spawn page, starts a notebook
on an A100 MIG slice with the ML environment, waits for JupyterLab, types `aiinfn jobs clone`
in a JupyterLab terminal, watches the Bunshin job complete on the jobs page, checks that bob's
spawn page shows one slice fewer while alice's server runs, and that stopping it frees the slice.
Two more check what a spawn link does (only pre-fill the form) and how the form reads; one
more is the backup issue's "done when": carol's deleted notebook restored through the backup
page.
Screenshots of every step, the demo's output and the cluster's logs are kept in
test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser import artifacts_dir, chrome, hub_frame_problems, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MIG = "a100-mig-1g-10gb"
CLONE = 'aiinfn jobs clone -- python -c "print(42)"'


@pytest.fixture(scope="module")
def demo(devcluster, tmp_path_factory):
    """`aiinfn-dev demo` on its own cluster and ports: (base URL, password); Ctrl-C at the end.
    One demo for the module's tests, each of which stops what it starts."""
    tmp_path = tmp_path_factory.mktemp("demo")
    _, session_cluster = devcluster
    if session_cluster is None:
        pytest.skip("the browser test runs the demo on the built dev cluster")
    name = f"browser-e2e-{os.getpid()}"
    port, api_port = processes.free_port(), processes.free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AIINFN_DEMO_MODE", None)
    output = tmp_path / "demo.log"
    with open(output, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiinfn_dev.demo",
                "demo",
                "--port",
                str(port),
                "--cluster-name",
                name,
                "--cluster-port",
                str(api_port),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = DevCluster(name=name, port=api_port, cache=session_cluster.cache)
    try:
        wait_for(
            lambda: "password:" in output.read_text() or process.poll() is not None,
            "the demo to start",
            300,
        )
        text = output.read_text()
        assert "aiinfn-dev demo is running at" in text, text[-3000:]
        yield f"http://127.0.0.1:{port}", re.search(r"password: (\S+)", text).group(1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        (artifacts_dir() / "demo.log").write_bytes(output.read_bytes())
        if cluster.layout.logs.is_dir():  # the cluster's component logs (pod runner among them)
            shutil.copytree(
                cluster.layout.logs, artifacts_dir() / "cluster-logs", dirs_exist_ok=True
            )
        cluster.down()


class Browser:
    """One user's Chromium: log in, open pages, keep numbered screenshots."""

    def __init__(self, base: str, user: str, profile: Path) -> None:
        self.base, self.user = base, user
        self.driver = chrome(profile)
        self.shots = 0

    def shot(self, step: str) -> None:
        self.shots += 1
        self.driver.save_screenshot(
            str(artifacts_dir() / f"{self.user}-{self.shots:02d}-{step}.png")
        )

    def click(self, element) -> None:
        """Scroll the element to the middle of the window first (at once: Bootstrap scrolls
        smoothly)."""
        self.driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element
        )
        element.click()

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base}{path}")

    def login(self, password: str) -> None:
        self.open("/hub/login")
        self.driver.find_element(By.ID, "username_input").send_keys(self.user)
        self.driver.find_element(By.ID, "password_input").send_keys(password)
        self.driver.find_element(By.ID, "login_submit").click()
        wait_for(
            lambda: "/hub/login" not in self.driver.current_url, f"{self.user} to be logged in"
        )

    def free_slices(self) -> tuple[int, int]:
        """(free, total) of the MIG slice on a freshly loaded spawn page."""
        self.open("/hub/spawn")
        badge = wait_for(
            lambda: self.driver.find_element(
                By.CSS_SELECTOR, f'[data-accelerator="{MIG}"] .aiinfn-availability'
            ),
            "the MIG availability",
        )
        return int(badge.get_attribute("data-free")), int(badge.get_attribute("data-total"))

    def wait_free_slices(self, expected: int, what: str) -> None:
        wait_for(lambda: self.free_slices()[0] == expected, what, timeout=90, interval=2)

    def stop_server(self) -> bool:
        """True once the home page's stop button is hidden (the hub's script hides it when the
        server has stopped); else click it, again if need be: a click that comes before the
        page's script is ready does nothing (JupyterHub's #start link is always there, so it
        tells nothing)."""
        stop = self.driver.find_elements(By.ID, "stop")
        if not stop or not stop[0].is_displayed():
            return True
        self.click(stop[0])
        return False

    def quit(self) -> None:
        self.driver.quit()


def _open_terminal_and_type(alice: Browser, command: str) -> None:
    driver = alice.driver
    card = wait_for(
        lambda: driver.find_element(
            By.XPATH,
            "//div[contains(@class, 'jp-LauncherCard')][.//p[normalize-space()='Terminal']]",
        ),
        "the Terminal card of JupyterLab's launcher",
        timeout=120,
    )
    card.click()
    prompt = wait_for(
        lambda: driver.find_element(By.CSS_SELECTOR, ".jp-Terminal textarea.xterm-helper-textarea"),
        "a JupyterLab terminal",
        timeout=60,
    )
    # Keys typed before the shell is ready wait in JupyterLab's queue and the terminal's input:
    # the jobs page, not a pause, is what shows that the command ran.
    prompt.send_keys(command + "\n")


def test_a_researcher_runs_a_notebook_and_a_bunshin_job_in_the_browser(demo, tmp_path):
    base, password = demo
    alice = Browser(base, "alice", tmp_path / "alice")
    bob = Browser(base, "bob", tmp_path / "bob")
    try:
        alice.login(password)
        bob.login(password)
        free, total = alice.free_slices()
        assert total >= 1 and free == total, "a fresh demo farm has every MIG slice free"
        page = alice.driver.page_source
        assert "NVIDIA A100 80GB" in page and re.search(r"\d+ of \d+ free now", page)
        alice.shot("spawn-page")

        driver = alice.driver
        alice.click(driver.find_element(By.ID, f"accelerator-{MIG}"))
        Select(driver.find_element(By.ID, f"environment--{MIG}")).select_by_value("ml-gpu")
        alice.shot("choices")
        alice.click(driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]"))
        wait_for(
            lambda: (
                "/user/alice/lab" in driver.current_url
                and driver.find_elements(By.CSS_SELECTOR, ".jp-LabShell")
            ),
            "JupyterLab to load",
            timeout=180,
            interval=1,
        )
        alice.shot("jupyterlab")

        assert bob.free_slices()[0] == free - 1, "bob sees alice's slice taken"
        bob.shot("one-slice-fewer")

        _open_terminal_and_type(alice, CLONE)
        # The images' Jupyter configuration (images/notebook) turns JupyterLab's announcements off:
        # no "official Jupyter news" question for every new user.
        config_data = driver.find_element(By.ID, "jupyter-config-data").get_attribute("textContent")
        config = json.loads(config_data)
        assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
        assert "official Jupyter news" not in driver.page_source

        driver.switch_to.new_window("tab")
        alice.open("/services/jobs/")
        row = wait_for(
            lambda: (
                alice.open("/services/jobs/")
                or driver.find_elements(By.CSS_SELECTOR, 'tr[data-job][data-state="succeeded"]')
            ),
            "the Bunshin job to complete on the jobs page",
            timeout=180,
            interval=3,
        )
        assert len(row) == 1 and "bunshin" in row[0].text, row[0].text
        assert hub_frame_problems(driver) == []
        alice.shot("jobs-page")
        driver.close()
        driver.switch_to.window(driver.window_handles[0])
        alice.shot("terminal")  # what `aiinfn jobs clone` printed, the job done

        bob.wait_free_slices(free - 1, "bob to see one slice fewer while alice's server runs")
        alice.open("/hub/home")
        wait_for(lambda: driver.find_element(By.ID, "stop"), "the stop button")
        wait_for(lambda: alice.stop_server(), "alice's server to stop", timeout=90, interval=5)
        alice.shot("stopped")
        bob.wait_free_slices(free, "the slice to be free again for bob")
        bob.shot("slice-free-again")
    finally:
        alice.quit()
        bob.quit()


def _refusal(user: Browser) -> str:
    """The error line of the user's spawn form."""
    return wait_for(
        lambda: user.driver.find_element(By.CLASS_NAME, "spawn-error-msg"), "a refusal"
    ).text


def test_a_spawn_link_only_prefills_the_form_and_starts_nothing(demo, tmp_path):
    base, password = demo
    alice = Browser(base, "alice", tmp_path / "alice")
    bob = Browser(base, "bob", tmp_path / "bob")
    try:
        alice.login(password)
        bob.login(password)
        driver = alice.driver
        # A link (from any site) with options shows the form with them chosen; it starts nothing.
        alice.open("/hub/spawn?accelerator=a30")
        notice = wait_for(lambda: driver.find_element(By.CLASS_NAME, "aiinfn-notice"), "the notice")
        assert notice.text == "These choices come from a link: check them, then press Start."
        assert driver.find_element(By.ID, "accelerator-a30").is_selected()
        assert not driver.find_elements(By.CSS_SELECTOR, ".spawn-error-msg")
        alice.shot("link-prefills-the-form")
        alice.open("/hub/home")
        wait_for(lambda: driver.find_elements(By.ID, "start"), "the home page")
        assert not driver.find_elements(By.ID, "stop"), "the link started a server"
        # A link with options the user may not take shows why, and starts nothing either.
        bob.open("/hub/spawn?accelerator=a30")
        assert "NVIDIA A30: not available to your groups" in _refusal(bob)
        bob.shot("link-refused")
        bob.open("/hub/home")
        wait_for(lambda: bob.driver.find_elements(By.ID, "start"), "bob's home page")
        assert not bob.driver.find_elements(By.ID, "stop"), "the link started a server"
    finally:
        alice.quit()
        bob.quit()


def test_the_spawn_form_reads_right(demo, tmp_path):
    base, password = demo
    alice = Browser(base, "alice", tmp_path / "alice")
    bob = Browser(base, "bob", tmp_path / "bob")
    try:
        alice.login(password)
        bob.login(password)
        driver = alice.driver
        # The cards: facts without a leading separator; the CPU card on the CPU environment.
        alice.open("/hub/spawn")
        facts = wait_for(lambda: driver.find_elements(By.CLASS_NAME, "aiinfn-facts"), "the cards")
        texts = [f.text for f in facts]
        assert all(t and not t.lstrip().startswith("·") for t in texts), texts
        # A card says what is free now and, when batch jobs hold units, what is free if they stop.
        card = driver.find_element(By.CSS_SELECTOR, f'[data-accelerator="{MIG}"] .aiinfn-facts')
        assert re.fullmatch(
            r"\d+ of \d+ free now( · \d+ if batch jobs stop \(\d+ jobs? would be stopped\))?"
            r" · 10 GB · .+",
            card.text,
        ), card.text
        cpu_environment = Select(driver.find_element(By.ID, "environment--cpu"))
        assert cpu_environment.first_selected_option.get_attribute("value") == "cpu"
        # The custom image field is wide enough for its whole placeholder.
        cpu_environment.select_by_value("custom-image")
        image = driver.find_element(By.ID, "image--cpu")
        alice.click(image)
        room, needed = driver.execute_script(
            """
            const input = arguments[0], style = getComputedStyle(input);
            const context = document.createElement('canvas').getContext('2d');
            context.font = style.font;
            const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
            return [input.clientWidth - padding, context.measureText(input.placeholder).width];""",
            image,
        )
        assert needed <= room, f"the placeholder needs {needed:.0f}px, the field has {room:.0f}px"
        alice.shot("cpu-card-custom-image")
        # A refusal shows its message, nothing else: from a link, and from a forged form.
        bob.open("/hub/spawn?accelerator=a30")
        assert _refusal(bob) == "Error: NVIDIA A30: not available to your groups"
        bob.open("/hub/spawn")
        radio = wait_for(lambda: bob.driver.find_element(By.ID, "accelerator-v70"), "the V70 card")
        bob.driver.execute_script("arguments[0].disabled = false; arguments[0].checked = 1", radio)
        bob.click(bob.driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]"))
        assert _refusal(bob) == "Error: AMD Versal V70: not available to your groups"
        bob.shot("form-refused")
        bob.open("/hub/home")
        wait_for(lambda: bob.driver.find_elements(By.ID, "start"), "bob's home page")
        assert not bob.driver.find_elements(By.ID, "stop")
    finally:
        alice.quit()
        bob.quit()


def _hub_api(base: str, token: str, method: str, path: str, body: object = None) -> dict:
    """One call of the hub's or a server's REST API with the user's token."""
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"{}")


def _token_of(user: Browser) -> str:
    """An API token the logged-in user makes, as the hub's token page does (its cookies and
    XSRF header)."""
    cookies = {c["name"]: c["value"] for c in user.driver.get_cookies()}
    request = urllib.request.Request(
        f"{user.base}/hub/api/users/{user.user}/tokens",
        data=json.dumps({"note": "backup walk-through"}).encode(),
        method="POST",
        headers={
            "Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()),
            "X-XSRFToken": cookies["_xsrf"],
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["token"]


def _run_state(user: Browser) -> str | None:
    """The backup or restore run's state once it has ended (its page reloads itself)."""
    state = user.driver.find_element(By.ID, "run-state").get_attribute("data-state")
    return None if state == "running" else state


def test_a_deleted_notebook_comes_back_through_the_backup_page(demo, tmp_path):
    """The backup issue's "done when", in the demo (docs/demo.md): carol's notebook is backed
    up, she deletes it, opens the backup page, finds the archive and restores the notebook
    into ~/restored/<archive>/, its content intact."""
    base, password = demo
    carol = Browser(base, "carol", tmp_path / "carol")
    driver, token = carol.driver, ""
    contents = "/user/carol/api/contents"
    try:
        carol.login(password)
        token = _token_of(carol)
        _hub_api(base, token, "POST", "/hub/api/users/carol/server", {"accelerator": "cpu"})
        wait_for(
            lambda: (
                _hub_api(base, token, "GET", "/hub/api/users/carol")["servers"]
                .get("", {})
                .get("ready")
            ),
            "carol's server",
            timeout=180,
            interval=2,
        )
        notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# hi"}]}
        notebook.update(metadata={}, nbformat=4, nbformat_minor=5)
        body = {"type": "notebook", "content": notebook}
        _hub_api(base, token, "PUT", f"{contents}/analysis.ipynb", body)
        saved = _hub_api(base, token, "GET", f"{contents}/analysis.ipynb")["content"]

        carol.open("/services/backup/")
        wait_for(lambda: driver.find_element(By.ID, "repositories"), "the backup page")
        assert hub_frame_problems(driver) == []
        carol.click(driver.find_element(By.CSS_SELECTOR, '#repositories [data-kind="home"]'))
        backup_now = wait_for(
            lambda: driver.find_element(By.CSS_SELECTOR, "#backup-now button"), "the archives"
        )
        carol.shot("no-archives")
        carol.click(backup_now)
        assert wait_for(lambda: _run_state(carol), "the backup", timeout=180) == "succeeded"
        _hub_api(base, token, "DELETE", f"{contents}/analysis.ipynb")

        carol.shot("backup-done")
        carol.open("/services/backup/")
        carol.click(driver.find_element(By.CSS_SELECTOR, '#repositories [data-kind="home"]'))
        link = wait_for(
            lambda: driver.find_element(By.CSS_SELECTOR, "#archives [data-archive] a"),
            "the archive",
        )
        archive = link.text
        carol.shot("archives")
        carol.click(link)
        row = wait_for(
            lambda: driver.find_element(By.CSS_SELECTOR, '#entries [data-path="analysis.ipynb"]'),
            "the notebook in the archive",
        )
        carol.shot("archive")
        carol.click(row.find_element(By.CSS_SELECTOR, "form.restore button"))
        assert wait_for(lambda: _run_state(carol), "the restore", timeout=180) == "succeeded"
        where = f"/home/jovyan/restored/{archive}/analysis.ipynb"
        assert driver.find_element(By.ID, "destination").text == where
        carol.shot("restored")
        restored = _hub_api(base, token, "GET", f"{contents}/restored/{archive}/analysis.ipynb")
        assert restored["content"] == saved
    finally:
        if token:
            _hub_api(base, token, "DELETE", "/hub/api/users/carol/server")
        carol.quit()
