"""The management web UI in a real headless chromium (Debian's), driven by Playwright.

Each test does what an operator does: log in, declare a queue, watch its depth change as a
real client publishes, get and purge messages, close a client's connection, and sees what its
user tags allow. With ``WARRENMQ_TEST_MANAGEMENT_EXTERNAL`` set, the same UI runs in front of
RabbitMQ's management API (tests/ui_proxy.py), which shows it needs nothing RabbitMQ's lacks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from access_helpers import RabbitAdmin
from browser_helpers import browser_context
from conftest import BrokerAddress, ManagementAddress
from pika_helpers import connection_closed, connection_parameters, queue_exists, wait_until
from ui_proxy import serve_ui

import warrenmq.plugins

STATIC = Path(warrenmq.plugins.__file__).parent / "management" / "static"
#: the UI polls every 5 s and RabbitMQ's statistics lag by up to 5 s more
TIMEOUT_MS = 20_000


@dataclass
class UI:
    url: str  # where the browser opens the UI
    amqp: BrokerAddress  # the broker's AMQP side, for the real clients
    admin: RabbitAdmin  # the management API as guest, to set up users


@pytest.fixture(scope="module")
def ui(management: ManagementAddress) -> Iterator[UI]:
    """The UI as the management plugin serves it; in front of another broker's API (RabbitMQ's,
    with ``WARRENMQ_TEST_MANAGEMENT_EXTERNAL``), served by tests/ui_proxy.py."""
    admin = RabbitAdmin(management.url)
    if management.external:
        with serve_ui(STATIC, management.url) as url:
            yield UI(url, management.amqp, admin)
    else:
        yield UI(management.url + "/", management.amqp, admin)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with browser_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture
def page(browser: object, ui: UI) -> Iterator[object]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    page = browser.new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    script_errors: list[object] = []
    page.on("pageerror", lambda error: script_errors.append(error))
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete queue ...?" and the like
    page.goto(ui.url)
    yield page
    page.close()
    assert not script_errors, f"the page raised: {script_errors}"


def log_in(page: object, user: str = "guest", password: str = "guest") -> None:
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def section(page: object, name: str) -> None:
    from playwright.sync_api import expect

    link = page.get_by_role("navigation", name="Sections").get_by_role(
        "link", name=name, exact=True
    )
    link.click()
    expect(link).to_have_attribute("aria-current", "page")


def figure(page: object, name: str) -> object:
    """The value shown under a figure's name ("Ready", "Consumers", ...)."""
    return page.get_by_role("group", name=name, exact=True).get_by_role("definition")


def cell(page: object, table: str, row: str, column: str) -> object:
    """The cell in ``column`` of the row of ``table`` that shows ``row``."""
    grid = page.get_by_role("table", name=table)
    headers = grid.get_by_role("columnheader").all_inner_texts()
    return (
        grid.get_by_role("row").filter(has_text=row).get_by_role("cell").nth(headers.index(column))
    )


def notice(page: object) -> object:
    return page.locator("#notice")


def alert(page: object) -> object:
    return page.get_by_role("alert").filter(has_text=re.compile(r"\S"))


def test_declare_publish_get_purge_and_delete_a_queue(page: object, ui: UI) -> None:
    from playwright.sync_api import expect

    queue = f"ui q/{uuid.uuid4().hex[:10]}"  # a space and a slash: names travel as one segment
    log_in(page)
    section(page, "Queues")
    declare = page.get_by_role("form", name="Add a new queue")
    declare.get_by_label("Name").fill(queue)
    declare.get_by_label("Durability").select_option("Transient")
    declare.get_by_role("button", name="Add queue").click()
    expect(notice(page)).to_have_text(f"Queue '{queue}' declared.")
    expect(cell(page, "Queues", queue, "Ready")).to_have_text("0")

    # a real client publishes; the list shows the depth at its next poll
    connection = pika.BlockingConnection(connection_parameters(ui.amqp))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(3):
            channel.basic_publish("", queue, f"from pika {n}".encode())
        expect(cell(page, "Queues", queue, "Ready")).to_have_text("3")
        expect(cell(page, "Queues", queue, "Total")).to_have_text("3")

        page.get_by_role("link", name=queue, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Queue {queue}")
        expect(figure(page, "Ready")).to_have_text("3")
        bindings = page.get_by_role("table", name="Bindings").get_by_role("row")
        expect(bindings).to_have_count(2)  # the header, and the default exchange's binding
        expect(cell(page, "Bindings", "(AMQP default)", "Routing key")).to_have_text(queue)

        publish = page.get_by_role("form", name="Publish message")
        publish.get_by_label("Payload").fill("from the UI")
        publish.get_by_role("button", name="Publish message").click()
        expect(notice(page)).to_have_text("Message published.")
        expect(figure(page, "Ready")).to_have_text("4")

        # get one and put it back (RabbitMQ's default ack mode); it comes first, redelivered
        got = page.get_by_role("form", name="Get messages")
        got.get_by_role("button", name="Get message(s)").click()
        message = page.get_by_role("region", name="Message 1")
        expect(figure(message, "Payload")).to_have_text("from pika 0")
        expect(figure(message, "Remaining in queue")).to_have_text("3")
        expect(figure(page, "Ready")).to_have_text("4")

        page.get_by_role("button", name="Purge messages").click()
        expect(notice(page)).to_have_text(f"Queue '{queue}' purged.")
        expect(figure(page, "Ready")).to_have_text("0")
        assert channel.queue_declare(queue, passive=True).method.message_count == 0

        page.get_by_role("button", name="Delete queue").click()
        expect(notice(page)).to_have_text(f"Queue '{queue}' deleted.")
        expect(page.get_by_role("heading", level=1)).to_have_text("Queues")
        expect(page.get_by_role("link", name=queue, exact=True)).to_have_count(0)
        assert not queue_exists(connection, queue)
    finally:
        connection.close()


def test_a_client_connection_is_listed_and_closed(page: object, ui: UI) -> None:
    from playwright.sync_api import expect

    name = f"ui-test-client-{uuid.uuid4().hex[:8]}"
    parameters = connection_parameters(ui.amqp)
    parameters.client_properties = {"connection_name": name}
    connection = pika.BlockingConnection(parameters)
    try:
        log_in(page)
        section(page, "Connections")
        row = page.get_by_role("table", name="Connections").get_by_role("row").filter(has_text=name)
        expect(row).to_contain_text("Pika Python Client Library")
        expect(cell(page, "Connections", name, "User")).to_have_text("guest")
        row.get_by_role("button", name=re.compile("^Close connection")).click()
        expect(notice(page)).to_contain_text("closed.")
        with connection_closed(320, "CONNECTION_FORCED"):
            wait_until(connection, lambda: False, "the broker to close the connection", 10)
        expect(row).to_have_count(0)
    finally:
        if connection.is_open:
            connection.close()


def test_a_wrong_password_shows_an_error(page: object) -> None:
    from playwright.sync_api import expect

    log_in(page, "guest", "not-the-password")
    expect(alert(page)).to_have_text("Login failed: wrong username or password.")
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    log_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    expect(page.locator("#login-error")).to_be_empty()


@pytest.fixture
def users(ui: UI) -> Iterator[dict[str, str]]:
    """Users made for one test (name -> password), deleted after it."""
    made: dict[str, str] = {}
    yield made
    for name in made:
        ui.admin.delete_user(name)


def add_user(ui: UI, users: dict[str, str], *tags: str, configure: str = ".*") -> str:
    name = f"ui-{'-'.join(tags) or 'none'}-{uuid.uuid4().hex[:8]}"
    users[name] = uuid.uuid4().hex
    ui.admin.add_user(name, users[name], tags)
    ui.admin.set_permissions(name, "/", configure, ".*", ".*")
    return name


def test_user_tags_decide_what_the_ui_offers(page: object, ui: UI, users: dict[str, str]) -> None:
    """As RabbitMQ: no tag, no UI; "management" sees queues and its own connections, not the
    users; "administrator" (guest) sees everything."""
    from playwright.sync_api import expect

    nobody = add_user(ui, users)
    manager = add_user(ui, users, "management", configure="^mine-")

    log_in(page, nobody, users[nobody])
    expect(alert(page)).to_contain_text("Login failed")
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()

    log_in(page, manager, users[manager])
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Queues")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_be_hidden()
    section(page, "Connections")
    expect(page.get_by_text("You see your own connections only")).to_be_visible()
    page.goto(ui.url + "#/admin")  # typed by hand: the overview instead
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    section(page, "Queues")  # may declare only queues named mine-...: the API says no
    declare = page.get_by_role("form", name="Add a new queue")
    declare.get_by_label("Name").fill("not-mine")
    declare.get_by_role("button", name="Add queue").click()
    # RabbitMQ answers 401 "Access refused."; warrenmq names the permission and the queue
    expect(alert(page)).to_contain_text("Not authorised: ")
    expect(page.get_by_role("link", name="not-mine", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()  # still logged in

    page.get_by_role("button", name="Log out").click()
    log_in(page)
    section(page, "Admin")
    expect(cell(page, "Users", manager, "Tags")).to_have_text("management")
    expect(cell(page, "Users", nobody, "Tags")).to_have_text("none")


def test_a_user_deleted_meanwhile_is_sent_back_to_the_login_form(
    page: object, ui: UI, users: dict[str, str]
) -> None:
    from playwright.sync_api import expect

    name = add_user(ui, users, "monitoring")
    log_in(page, name, users.pop(name))
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    ui.admin.delete_user(name)
    # the next poll gets a 401 for the password too, not only for a missing right
    expect(page.locator("#login-error")).to_contain_text("Logged out: ")
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    expect(page.get_by_label("Username")).to_be_visible()


def test_admin_adds_a_user_sets_permissions_and_deletes_it(page: object, ui: UI) -> None:
    from playwright.sync_api import expect

    name = f"ui-made-{uuid.uuid4().hex[:8]}"
    log_in(page)
    section(page, "Admin")
    add = page.get_by_role("form", name="Add a user")
    add.get_by_label("Username").fill(name)
    add.get_by_label("Password").fill(uuid.uuid4().hex)
    add.get_by_label("Tags").fill("monitoring")
    add.get_by_role("button", name="Add user").click()
    expect(notice(page)).to_have_text(f"User '{name}' added.")
    expect(cell(page, "Users", name, "Tags")).to_have_text("monitoring")
    expect(cell(page, "Users", name, "Can access virtual hosts")).to_have_text("no access")

    grant = page.get_by_role("form", name="Set permission")
    grant.get_by_label("User").select_option(name)
    grant.get_by_label("Virtual host").select_option("/")
    grant.get_by_label("Write regexp").fill("^ui-")
    grant.get_by_role("button", name="Set permission").click()
    expect(cell(page, "Permissions", name, "Write")).to_have_text("^ui-")
    expect(cell(page, "Users", name, "Can access virtual hosts")).to_have_text("/")

    page.get_by_role("button", name=f"Delete user {name}").click()
    expect(notice(page)).to_have_text(f"User '{name}' deleted.")
    expect(
        page.get_by_role("table", name="Users").get_by_role("row").filter(has_text=name)
    ).to_have_count(0)


def test_api_errors_are_shown(page: object, ui: UI) -> None:
    from playwright.sync_api import expect

    queue = f"ui-{uuid.uuid4().hex[:10]}"
    log_in(page)
    section(page, "Queues")
    declare = page.get_by_role("form", name="Add a new queue")
    declare.get_by_label("Name").fill(queue)
    declare.get_by_label("Arguments (JSON)").fill("{not json")
    declare.get_by_role("button", name="Add queue").click()
    expect(alert(page)).to_contain_text("Arguments is not valid JSON")
    page.get_by_role("button", name="Dismiss error").click()
    expect(alert(page)).to_have_count(0)

    declare.get_by_label("Arguments (JSON)").fill("")
    declare.get_by_role("button", name="Add queue").click()  # durable, the default
    expect(notice(page)).to_have_text(f"Queue '{queue}' declared.")
    try:
        declare.get_by_label("Name").fill(queue)
        declare.get_by_label("Durability").select_option("Transient")
        declare.get_by_role("button", name="Add queue").click()
        expect(alert(page)).to_contain_text("inequivalent arg 'durable'")
        expect(alert(page)).to_contain_text("Bad request")
    finally:
        connection = pika.BlockingConnection(connection_parameters(ui.amqp))
        connection.channel().queue_delete(queue)
        connection.close()


def test_exchanges_and_bindings(page: object, ui: UI) -> None:
    from playwright.sync_api import expect

    exchange = f"ui-x-{uuid.uuid4().hex[:8]}"
    queue = f"ui-q-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(connection_parameters(ui.amqp))
    channel = connection.channel()
    channel.queue_declare(queue, auto_delete=False)
    try:
        log_in(page)
        section(page, "Exchanges")
        declare = page.get_by_role("form", name="Add a new exchange")
        declare.get_by_label("Name").fill(exchange)
        declare.get_by_label("Type").select_option("topic")
        declare.get_by_role("button", name="Add exchange").click()
        expect(cell(page, "Exchanges", exchange, "Type")).to_have_text("topic")

        page.get_by_role("link", name=exchange, exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Exchange {exchange}")
        bind = page.get_by_role("form", name="Add binding from this exchange")
        bind.get_by_label("Destination", exact=True).fill(queue)
        bind.get_by_label("Routing key").fill("orders.*")
        bind.get_by_role("button", name="Bind").click()
        expect(cell(page, "Bindings from this exchange", queue, "Routing key")).to_have_text(
            "orders.*"
        )

        publish = page.get_by_role("form", name="Publish message")
        publish.get_by_label("Routing key").fill("orders.new")
        publish.get_by_label("Payload").fill("routed")
        publish.get_by_role("button", name="Publish message").click()
        expect(notice(page)).to_have_text("Message published.")
        publish.get_by_label("Routing key").fill("invoices.new")
        publish.get_by_label("Payload").fill("lost")
        publish.get_by_role("button", name="Publish message").click()
        expect(notice(page)).to_have_text("Message published, but not routed to any queue.")
        method, _, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"routed" and method.message_count == 0

        page.get_by_role("button", name=re.compile(f"^Unbind {exchange} from {queue}")).click()
        expect(notice(page)).to_have_text("Binding removed.")
        expect(page.get_by_role("table", name="Bindings from this exchange")).to_contain_text(
            "No bindings."
        )

        page.get_by_role("button", name="Delete exchange").click()
        expect(notice(page)).to_have_text(f"Exchange '{exchange}' deleted.")
        expect(page.get_by_role("link", name=exchange, exact=True)).to_have_count(0)
    finally:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()


def test_overview_charts_and_a_screenshot(page: object, ui: UI, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    log_in(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    expect(figure(page, "Exchanges")).to_have_text(re.compile(r"^\d[\d,]*$"))
    rates = page.get_by_role("img", name=re.compile("^Message rates, last 10 minutes"))
    expect(rates).to_be_visible()
    expect(
        page.get_by_role("img", name=re.compile("^Queued messages, last 10 minutes"))
    ).to_be_visible()
    expect(rates).to_have_attribute("aria-label", re.compile(r"now: Publish \d"))
    shot = tmp_path / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_the_ui_files_ship_in_the_wheel(tmp_path: Path) -> None:
    """``pip install .`` carries every static file (package data), with no build step."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "source"  # a copy: the build leaves build/ and *.egg-info behind
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(root / name, source / name)
    for name in ("core", "plugins", "transports"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("warrenmq-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    static = root / "plugins" / "management" / "static"
    wanted = {
        "warrenmq/plugins/management/static/" + path.relative_to(static).as_posix()
        for path in static.rglob("*")
        if path.is_file()
    }
    assert "warrenmq/plugins/management/static/index.html" in wanted
    assert wanted <= shipped, f"not in the wheel: {sorted(wanted - shipped)}"
