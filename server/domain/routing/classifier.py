"""A deterministic, explainable complexity classifier: SIMPLE, MEDIUM, COMPLEX or REASONING.

It reads the last user turn (its ask, not the bulk of any pasted material) for reasoning, math,
code, multi-step, technical, structure and constraint markers in several languages, and the
request's shape (tools, images, context size, response format, conversation depth). No network,
no model: compiled regular expressions, well under a millisecond for a 2,000-token prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.domain.chat.request import text_of
from server.domain.routing.lexicon import Document, Lexicon

TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
#: Text longer than this is mostly pasted material: its intent is read from the head and the tail.
ASK_WINDOW = 600


#: Asking for a proof or a derivation: decisive on its own.
REASONING = Lexicon(
    "prove",
    "proof",
    "theorem",
    "lemma",
    "derive",
    "derivation",
    "rigorous*",
    "show that",
    "show rigorously",
    "justify",
    "induction",
    "contradiction",
    "demuestra",
    "demostrar",
    "prouvez",
    "prouve",
    "prouver",
    "montrez que",
    "démontre",
    "démontrez",
    "beweise",
    "zeige dass",
    "dimostra",
    "证明",
    "推导",
    "докажи",
    "доказ",
    "証明",
)
#: Careful-thinking requests: decisive together with math or a puzzle.
THINK = Lexicon(
    "step by step", "reason carefully", "think carefully", "logical error", "formally", "precisely"
)
#: Asking for something to be produced or explained: more than a lookup.
TASK = Lexicon(
    "explain*",
    "write",
    "draft",
    "create",
    "describe",
    "compare",
    "how does",
    "how do",
    "how can",
    "why",
    "what are",
    "outline",
    "give me tips",
    "give me interview",
    "give me a study",
    "plan",
    "difference",
    "build",
    "design",
    "analyze",
    "analyse",
    "strateg*",
    "escreva",
    "escribe",
    "explica*",
    "écris",
    "rédige",
    "résume",
    "erkläre",
    "wie funktioniert",
    "dame una",
    "объясни",
    "проанализируй",
    "解释",
    "设计",
    "entwirf",
    "diseña",
    "implémente",
    "implement",
    "what is machine",
)
MATH = Lexicon(
    "integer",
    "integers",
    "prime",
    "primes",
    "divisible",
    "probability",
    "expected number",
    "expected value",
    "equation",
    "polynomial",
    "matrix",
    "matrices",
    "determinant",
    "series",
    "limit",
    "converge*",
    "irrational",
    "recurrence",
    "functions f",
    "graph",
    "vertices",
    "permutation*",
    "divisor*",
    "factorization",
    "real numbers",
    "real x",
    "sqrt",
    "modulo",
    "subset*",
    "inequality",
    "triangle",
    "perfect square",
    "n^2",
    "x^",
    "√",
    "∑",
    "∫",
    "\\frac",
    "omega(",
    "complexity",
    "número*",
    "nombres premiers",
    "primfaktor*",
    "zahl",
    "整除",
    "正整数",
    "иррацион",
    "numeri",
)
PUZZLE = Lexicon(
    "find all",
    "how many ways",
    "how many integers",
    "how many positive",
    "minimum value",
    "smallest positive",
    "such that",
    "determine whether",
    "determine the",
    "optimal play",
    "who wins",
    "guarantee*",
    "puzzle",
    "weighings",
)
CODE = Lexicon(
    "```",
    "def ",
    "class ",
    "function",
    "return",
    "=>",
    "#include",
    "select *",
    "import ",
    "console.log",
    "code",
    "bug",
    "stack trace",
    "traceback",
    "exception",
    "compile*",
    "refactor*",
    "implement*",
    "unit test",
    "unit tests",
    "regex",
    "sql",
    "python",
    "javascript",
    "typescript",
    "rust",
    "go",
    "java",
    "c++",
    "bash",
    "script",
    "api",
    "cli",
    "css",
    "react",
    "node.js",
    "pytest",
    "query",
    "schema",
    "código",
    "programa",
)
MULTI_STEP = Lexicon(
    "step by step",
    "first",
    "then",
    "finally",
    "phase",
    "phased",
    "plan",
    "pipeline",
    "migrat*",
    "design",
    "architecture",
    "roadmap",
    "timeline",
    "stage",
    "stages",
    "walk me through",
    "diseña",
    "entwirf",
    "plan de",
    "设计",
    "designe",
)
TECHNICAL = Lexicon(
    "kubernetes",
    "docker",
    "latency",
    "throughput",
    "concurren*",
    "distributed",
    "consensus",
    "database",
    "index",
    "indexes",
    "indexing",
    "transaction",
    "transactions",
    "microservice*",
    "cache",
    "caching",
    "scalab*",
    "scaling",
    "encryption",
    "protocol",
    "compiler",
    "kernel",
    "neural",
    "gradient",
    "transformer",
    "redis",
    "postgres*",
    "sharding",
    "replication",
    "failover",
    "idempoten*",
    "observability",
    "terraform",
    "ci/cd",
    "security",
    "gdpr",
    "hipaa",
    "load balanc*",
    "high availability",
    "alta disponibilidad",
    "multi-region",
    "multi-tenant",
    "thread-safe",
    "deadlock*",
    "jvm",
    "etl",
    "crdt*",
    "асинхрон",
    "масштаб",
    "并发",
    "缓存",
    "datenkonsistenz",
)
STRUCTURE = Lexicon(
    "table",
    "json",
    "yaml",
    "csv",
    "outline",
    "essay",
    "report",
    "detailed",
    "comprehensive",
    "in depth",
    "thorough",
    "compare",
    "tradeoff",
    "tradeoffs",
    "pros and cons",
    "section",
    "sections",
    "document",
    "recommend",
    "recommendation",
    "explain each",
    "detallad*",
    "détaillé*",
    "detailliert*",
    "relatório detalhado",
    "tabla",
)
CONSTRAINTS = Lexicon(
    "must",
    "at least",
    "at most",
    "no more than",
    "exactly",
    "without using",
    "ensure",
    "o(1)",
    "o(n",
    "including",
    "handle",
    "handles",
    "with tests",
    "include tests",
    "type hints",
    "edge cases",
    "benchmark",
    "benchmarks",
    "retry",
    "retries",
    "rollback",
)
#: Lookups, greetings, translations, definitions: short answers.
SIMPLE = Lexicon(
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank you",
    "ok",
    "okay",
    "good morning",
    "good evening",
    "hola",
    "bonjour",
    "hallo",
    "ciao",
    "olá",
    "你好",
    "こんにちは",
    "привет",
    "capital of",
    "the capital",
    "capitale",
    "hauptstadt",
    "the currency",
    "the plural",
    "the opposite",
    "chemical symbol",
    "boiling point",
    "largest planet",
    "translate",
    "traduce",
    "define",
    "synonym",
    "synonyme",
    "antonym",
    "spell",
    "who wrote",
    "who painted",
    "who is the author",
    "how tall",
    "how many legs",
    "how many days",
    "summarize this",
    "summarize in",
    "summarise this",
    "tl;dr",
    "fix the typo",
    "convert",
    "stand for",
    "what does",
    "tell me a joke",
    "tell me a fun fact",
    "haiku",
    "round",
    "which ocean",
    "which language",
    "rhyme",
    "what day",
    "首都",
)
LONG_CONTEXT_TOKENS = 50_000
#: Score boundaries between SIMPLE, MEDIUM and COMPLEX (REASONING is decided by its markers).
SIMPLE_BELOW = 0.15
COMPLEX_FROM = 0.40


@dataclass(frozen=True)
class Classification:
    """The tier, the score behind it, and the reasons, for headers and logs."""

    tier: str
    score: float
    reasons: list[str] = field(default_factory=list)


def _ask(text: str) -> str:
    if len(text) <= 2 * ASK_WINDOW:
        return text
    return text[:ASK_WINDOW] + "\n" + text[-ASK_WINDOW:]


def classify(
    messages: list[dict[str, Any]],
    *,
    tools: int = 0,
    tool_choice_required: bool = False,
    images: bool = False,
    prompt_tokens: int = 0,
    structured_output: bool = False,
) -> Classification:
    """Classify a request. Deterministic: the same request always gets the same tier."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    text = text_of(last.get("content")) if last else ""
    ask = _ask(text)
    reasons: list[str] = []
    document = Document.of(ask)
    found = {
        name: lexicon.hits(document)
        for name, lexicon in (
            ("reasoning", REASONING),
            ("think", THINK),
            ("task", TASK),
            ("math", MATH),
            ("puzzle", PUZZLE),
            ("code", CODE),
            ("multi-step", MULTI_STEP),
            ("technical", TECHNICAL),
            ("structure", STRUCTURE),
            ("constraints", CONSTRAINTS),
            ("simple", SIMPLE),
        )
    }
    weights = {
        "task": 0.14,
        "code": 0.07,
        "multi-step": 0.09,
        "technical": 0.08,
        "structure": 0.08,
        "constraints": 0.06,
        "math": 0.03,
    }
    score = 0.0
    for name, weight in weights.items():
        count = len(found[name])
        if count:
            score += weight * min(count, 4)
            reasons.append(f"{name}: {', '.join(found[name][:4])}")
    words = len(ask.split())
    items = min(ask.count(",") + ask.count(";") + ask.count(":"), 8)
    score += min(words, 60) / 60 * 0.2 + items * 0.025
    if found["simple"] and not (found["reasoning"] or found["code"] or found["technical"]):
        score -= 0.3
        reasons.append(f"simple ask: {', '.join(found['simple'][:3])}")
    if len(text) > 2 * ASK_WINDOW:
        reasons.append(f"long input ({len(text)} characters): intent read from its head and tail")

    tier = "SIMPLE" if score < SIMPLE_BELOW else "MEDIUM" if score < COMPLEX_FROM else "COMPLEX"
    if (
        found["reasoning"]
        or (found["think"] and (found["math"] or found["puzzle"]))
        or (found["puzzle"] and len(found["math"]) >= 1)
    ):
        tier = "REASONING"
        reasons.append(f"reasoning: {', '.join((found['reasoning'] + found['think'] + found['puzzle'])[:4])}")

    floor = 0
    if tools:
        floor = max(floor, 2 if tools >= 4 or tool_choice_required else 1)
        reasons.append(f"tools: {tools} (agentic)")
    if images:
        floor = max(floor, 1)
        reasons.append("images: vision")
    if prompt_tokens > LONG_CONTEXT_TOKENS:
        floor = max(floor, 2)
        reasons.append(f"long context: {prompt_tokens} tokens")
    if structured_output:
        floor = max(floor, 1)
        reasons.append("structured output requested")
    if len(messages) > 10:
        floor = max(floor, 1)
        reasons.append(f"conversation depth: {len(messages)} messages")
    if TIERS.index(tier) < floor:
        tier = TIERS[floor]
    return Classification(tier=tier, score=round(score, 3), reasons=reasons)
