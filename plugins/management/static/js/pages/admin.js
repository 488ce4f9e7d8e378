// Admin (administrators only, as in RabbitMQ): users with their tags, adding and deleting one,
// and the permissions of users in virtual hosts.

import { del, get, path, put } from "../api.js";
import { field, fill, h, input, select, table } from "../dom.js";
import { confirmed, form } from "../forms.js";

const tagList = (tags) => (Array.isArray(tags) ? tags : String(tags || "").split(/[,\s]+/)).filter(Boolean);

export function adminPage(view, ctx) {
  const users = h("div", { class: "table-wrap" });
  const perms = h("div", { class: "table-wrap" });
  const userChoice = select("user", []);

  const refresh = async () => {
    const [userList, permList] = await Promise.all([get("users"), get("permissions")]);
    const access = new Map();
    for (const p of permList) access.set(p.user, [...(access.get(p.user) ?? []), p.vhost]);
    users.replaceChildren(
      table(
        "Users",
        ["Name", "Tags", "Can access virtual hosts", "Has password", ""],
        userList.map((u) => [
          u.name,
          tagList(u.tags).join(", ") || "none",
          (access.get(u.name) ?? []).join(", ") || "no access",
          u.password_hash ? "yes" : "no",
          u.name === ctx.me.name
            ? ""
            : h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Delete user ${u.name}`,
                  onclick: (event) =>
                    confirmed(`Delete user '${u.name}'?`) &&
                    ctx.act(event.currentTarget, `User '${u.name}' deleted.`, () => del(path("users", u.name))),
                },
                "Delete",
              ),
        ]),
      ),
    );
    perms.replaceChildren(
      table(
        "Permissions",
        ["User", "Virtual host", "Configure", "Write", "Read", ""],
        permList.map((p) => [
          p.user,
          p.vhost,
          p.configure,
          p.write,
          p.read,
          h(
            "button",
            {
              type: "button",
              "aria-label": `Clear permissions of ${p.user} in ${p.vhost}`,
              onclick: (event) =>
                ctx.act(event.currentTarget, `Permissions of '${p.user}' in '${p.vhost}' cleared.`, () =>
                  del(path("permissions", p.vhost, p.user)),
                ),
            },
            "Clear",
          ),
        ]),
        "No permissions.",
      ),
    );
    const chosen = userChoice.value;
    userChoice.replaceChildren(
      ...userList.map((u) => h("option", { value: u.name, selected: u.name === chosen }, u.name)),
    );
  };

  const addUser = form(
    "Add a user",
    [
      field("Username", input("name", { required: true, autocomplete: "off" })),
      field("Password", input("password", { type: "password", autocomplete: "new-password" })),
      field(
        "Tags",
        input("tags", { placeholder: "administrator, monitoring, management" }),
        "Comma-separated: administrator, monitoring, policymaker, management; empty for none.",
      ),
    ],
    "Add user",
    (v, button, el) =>
      ctx.act(button, `User '${v.name}' added.`, async () => {
        const body = { tags: tagList(v.tags).join(",") };
        if (v.password) body.password = v.password;
        else body.password_hash = "";
        await put(path("users", v.name), body);
        el.reset();
      }),
  );

  const setPermission = form(
    "Set permission",
    [
      field("User", userChoice),
      field("Virtual host", select("vhost", ctx.vhosts, ctx.vhost || "/")),
      field("Configure regexp", input("configure", { value: ".*" })),
      field("Write regexp", input("write", { value: ".*" })),
      field("Read regexp", input("read", { value: ".*" })),
    ],
    "Set permission",
    (v, button) =>
      ctx.act(button, `Permissions of '${v.user}' in '${v.vhost}' set.`, () =>
        put(path("permissions", v.vhost, v.user), { configure: v.configure, write: v.write, read: v.read }),
      ),
  );

  fill(
    view,
    h("h1", {}, "Users and permissions"),
    users,
    h("div", { class: "columns" }, addUser, setPermission),
    perms,
  );
  return { refresh };
}
