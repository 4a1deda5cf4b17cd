// The CrossCompute dashboard: sign in with Supabase, manage API keys, see spending, try a key.
// Plain ES module, no build step. It talks to this gateway (same origin) and to the Supabase
// project `/api/config` names, nothing else (the page's Content-Security-Policy says the same).

import { formatNumber, stackedBars } from "/dashboard/charts.js";

const $ = (id) => document.getElementById(id);
const state = { client: null, session: null, usage: null, busy: false };

function show(id, visible = true) {
  $(id).hidden = !visible;
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  show("error", Boolean(text));
}

// The message of an error answer, in any of the gateway's shapes (the API's, OpenAI's, Anthropic's).
async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// A call to the gateway's `/api` with the signed-in person's Supabase access token.
async function api(path, options = {}) {
  const { data } = await state.client.auth.getSession();
  const token = data.session?.access_token;
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function credits(value) {
  return value === undefined || value === null ? "—" : formatNumber(value);
}

function when(value) {
  if (!value) return "never";
  const date = new Date(value);
  return date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" }) + " UTC";
}

// ---- Sign-in -------------------------------------------------------------------------------

async function start() {
  let config;
  try {
    const response = await fetch("/api/config");
    config = await response.json();
  } catch {
    setStatus("");
    showError("The gateway did not answer /api/config.");
    return;
  }
  show("playground");
  if (!config.supabaseConfigured) {
    setStatus("Sign-in is not configured on this gateway.");
    show("not-configured");
    return;
  }
  state.client = window.supabase.createClient(config.supabaseUrl, config.supabasePublishableKey, {
    auth: { persistSession: true, autoRefreshToken: true, detectSessionInUrl: true },
  });
  state.client.auth.onAuthStateChange((event, session) => {
    // Supabase calls back inside its own lock: leave it before calling it again.
    setTimeout(() => onSession(session), 0);
  });
  showOAuthButtons(config);
}

let shownUser; // undefined until the first auth event, then the shown user id or null

async function onSession(session) {
  state.session = session;
  const userId = session?.user?.id || null;
  if (userId === shownUser) return;
  shownUser = userId;
  show("who", Boolean(session));
  show("sign-in", !session);
  show("signed-in", Boolean(session));
  if (!session) {
    setStatus("Signed out.");
    return;
  }
  $("user-email").textContent = session.user.email || session.user.id;
  try {
    await bootstrap();
    await Promise.all([loadKeys(), loadUsage()]);
    setStatus("Signed in.");
  } catch (error) {
    showError(error.message);
  }
}

// Providers the Supabase project has switched on (its public settings); email is always offered.
async function showOAuthButtons(config) {
  const container = $("oauth");
  container.replaceChildren();
  let external = {};
  try {
    const response = await fetch(`${config.supabaseUrl}/auth/v1/settings`, {
      headers: { apikey: config.supabasePublishableKey },
    });
    if (response.ok) external = (await response.json()).external || {};
  } catch {
    external = {};
  }
  const skip = new Set(["email", "phone", "anonymous_users", "saml"]);
  for (const [provider, enabled] of Object.entries(external)) {
    if (!enabled || skip.has(provider)) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = `Continue with ${provider[0].toUpperCase()}${provider.slice(1)}`;
    button.addEventListener("click", () =>
      state.client.auth.signInWithOAuth({ provider, options: { redirectTo: location.origin + "/" } }),
    );
    container.append(button);
  }
}

$("magic-link-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const email = $("email").value.trim();
  const { error } = await state.client.auth.signInWithOtp({
    email,
    options: { emailRedirectTo: location.origin + "/" },
  });
  if (error) showError(`Could not send the link: ${error.message}`);
  else setStatus(`A sign-in link is on its way to ${email}.`);
});

$("sign-out").addEventListener("click", async () => {
  await state.client.auth.signOut({ scope: "local" });
});

// ---- Account, keys ---------------------------------------------------------------------------

async function bootstrap() {
  const me = await api("/api/me");
  if (me.bootstrapped) {
    $("balance").textContent = credits(me.account.balanceCredits);
    return;
  }
  setStatus("Setting up your account…");
  const made = await api("/api/bootstrap-account", { method: "POST", body: "{}" });
  $("balance").textContent = credits(made.account.balanceCredits);
  if (made.created && made.apiKey) showSecret(made.key.label, made.apiKey);
}

function showSecret(label, secret) {
  $("new-secret-label").textContent = label;
  $("new-secret-value").value = secret;
  $("copy-status").textContent = "";
  show("new-secret");
  $("playground-key").value = secret; // ready to try, for this page's life only
  $("new-secret-value").focus();
  $("new-secret-value").select();
}

$("copy-secret").addEventListener("click", async () => {
  const secret = $("new-secret-value").value;
  try {
    await navigator.clipboard.writeText(secret);
  } catch {
    $("new-secret-value").select();
    document.execCommand("copy");
  }
  $("copy-status").textContent = "Copied to the clipboard.";
});

$("hide-secret").addEventListener("click", () => {
  $("new-secret-value").value = "";
  show("new-secret", false);
  $("key-label").focus();
});

async function loadKeys() {
  const { keys } = await api("/api/keys");
  const body = $("keys-table").tBodies[0];
  body.replaceChildren();
  for (const key of keys) {
    const row = document.createElement("tr");
    row.dataset.keyId = key.id;
    row.dataset.prefix = key.prefix;
    const cells = [
      key.label,
      key.prefix,
      key.quotaCredits === null || key.quotaCredits === undefined ? "no limit" : credits(key.quotaCredits),
      credits(key.usedCredits),
      credits(key.remainingCredits),
      when(key.lastUsedAt),
      key.active ? "yes" : "no",
    ];
    cells.forEach((text, index) => {
      const cell = document.createElement(index === 0 ? "th" : "td");
      if (index === 0) cell.scope = "row";
      if (index === 1) cell.className = "mono";
      cell.textContent = text;
      row.append(cell);
    });
    const action = document.createElement("td");
    if (key.active) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "danger small";
      button.textContent = "Deactivate";
      button.setAttribute("aria-label", `Deactivate ${key.label} (${key.prefix})`);
      button.addEventListener("click", () => confirmDeactivate(key, button));
      action.append(button);
    }
    row.append(action);
    body.append(row);
  }
}

function confirmDeactivate(key, opener) {
  const dialog = $("confirm-deactivate");
  $("confirm-key").textContent = `${key.label} (${key.prefix})`;
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "confirm") {
        opener.focus();
        return;
      }
      try {
        await api(`/api/keys/${encodeURIComponent(key.id)}/deactivate`, { method: "POST", body: "{}" });
        await loadKeys();
        setStatus(`${key.label} (${key.prefix}) is deactivated.`);
        $("keys-title").focus();
      } catch (error) {
        showError(error.message);
      }
    },
    { once: true },
  );
  dialog.showModal();
}

$("create-key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const label = $("key-label").value.trim();
  const quota = $("key-quota").value.trim();
  const body = { label, ...(quota === "" ? {} : { quotaCredits: Number(quota) }) };
  try {
    const created = await api("/api/keys", { method: "POST", body: JSON.stringify(body) });
    $("create-key-form").reset();
    await loadKeys();
    showSecret(created.key.label, created.apiKey);
    setStatus(`Created ${created.key.label} (${created.key.prefix}).`);
  } catch (error) {
    showError(`Could not create the key: ${error.message}`);
  }
});

// ---- Usage -----------------------------------------------------------------------------------

async function loadUsage() {
  const days = $("usage-days").value;
  state.usage = await api(`/api/usage?days=${encodeURIComponent(days)}`);
  $("balance").textContent = credits(state.usage.balanceCredits);
  drawUsage();
}

function drawUsage() {
  const usage = state.usage;
  if (!usage) return;
  const metric = $("usage-metric").value;
  const unit = metric === "credits" ? "credits" : "requests";
  const dates = usage.daily.map((day) => day.date);
  const series = (items, name) =>
    items.map((item) => ({ name: name(item), values: item.daily.map((day) => Number(day[metric])) }));
  $("usage-summary").textContent =
    `${formatNumber(usage.totals.credits)} credits spent on ${formatNumber(usage.totals.requestCount)} ` +
    `requests from ${usage.startDate} to ${usage.endDate} (UTC days).`;
  stackedBars($("chart-keys"), {
    title: `${unit[0].toUpperCase()}${unit.slice(1)} per day, by key`,
    unit,
    dates,
    series: series(usage.byKey, (key) => `${key.label} (${key.prefix})`),
  });
  stackedBars($("chart-models"), {
    title: `${unit[0].toUpperCase()}${unit.slice(1)} per day, by model`,
    unit,
    dates,
    series: series(usage.byModel, (model) => model.model),
  });
}

$("usage-days").addEventListener("change", () => loadUsage().catch((error) => showError(error.message)));
$("usage-metric").addEventListener("change", drawUsage);

// ---- Playground ------------------------------------------------------------------------------

// Each API the gateway serves: where to send, how to ask, and where the answer's text is.
const APIS = {
  chat: {
    path: "/v1/chat/completions",
    headers: (key) => ({ authorization: `Bearer ${key}` }),
    body: (model, text) => ({ model, messages: [{ role: "user", content: text }], max_tokens: 200 }),
    text: (answer) => answer.choices?.[0]?.message?.content ?? "",
  },
  responses: {
    path: "/v1/responses",
    headers: (key) => ({ authorization: `Bearer ${key}` }),
    body: (model, text) => ({ model, input: text, max_output_tokens: 200, store: false }),
    text: (answer) =>
      (answer.output || [])
        .filter((item) => item.type === "message")
        .flatMap((item) => item.content || [])
        .filter((part) => part.type === "output_text")
        .map((part) => part.text)
        .join(""),
  },
  messages: {
    path: "/v1/messages",
    headers: (key) => ({ "x-api-key": key, "anthropic-version": "2023-06-01" }),
    body: (model, text) => ({ model, max_tokens: 200, messages: [{ role: "user", content: text }] }),
    text: (answer) =>
      (answer.content || [])
        .filter((block) => block.type === "text")
        .map((block) => block.text)
        .join(""),
  },
};

$("playground-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.busy) return;
  state.busy = true;
  $("playground-send").disabled = true;
  show("playground-error", false);
  show("playground-result", false);
  setStatus("Sending…");
  const api = APIS[$("playground-api").value];
  try {
    const response = await fetch(api.path, {
      method: "POST",
      headers: { "content-type": "application/json", ...api.headers($("playground-key").value.trim()) },
      body: JSON.stringify(api.body($("playground-profile").value, $("playground-message").value)),
    });
    if (!response.ok) {
      const message = await errorMessage(response);
      $("playground-error").textContent = `Refused (HTTP ${response.status}): ${message}`;
      show("playground-error");
      setStatus("The gateway refused the request.");
      return;
    }
    const answer = await response.json();
    const header = (name) => response.headers.get(`x-crosscompute-${name}`) || "—";
    $("playground-answer").textContent = api.text(answer);
    $("route-api").textContent = api.path;
    $("route-tier").textContent = header("routing-tier");
    $("route-model").textContent = header("routed-model");
    $("route-provider").textContent = header("provider");
    $("route-credits").textContent = header("billed-credits");
    show("playground-result");
    if (state.session) await Promise.all([loadKeys(), loadUsage()]);
    setStatus("Answered.");
  } catch (error) {
    $("playground-error").textContent = `The request failed: ${error.message}`;
    show("playground-error");
  } finally {
    state.busy = false;
    $("playground-send").disabled = false;
  }
});

start();
