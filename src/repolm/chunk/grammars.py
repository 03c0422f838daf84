"""Per-language tables for the unit extractor: which tree-sitter nodes are functions, types and
containers, and each language's test conventions.

Adding a language is one `Grammar` entry in `TABLES` (its repolm language and tree-sitter
grammar are a line of `repolm.syntax.GRAMMARS`), plus at most a small hook for a node type the
tables cannot describe (Rust `impl` blocks, Go methods, JS `describe(...)` calls).

The file is long because it is a table: one section per language, its node types and the few
hooks they need, kept side by side so that languages are written (and compared) alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from repolm import syntax

if TYPE_CHECKING:
    from tree_sitter import Node


class Scope(NamedTuple):
    """Where a declaration sits: the qualified path its name joins (`sep` between), the enclosing
    unit, whether functions here are methods, whether the container is a test, and the file.
    (Named tuples: made for every container walked, so they must be cheap.)"""

    path: str = ""
    sep: str = "."
    parent: str | None = None
    in_type: bool = False
    in_test: bool = False
    file: str = ""

    def join(self, name: str) -> str:
        return f"{self.path}{self.sep}{name}" if self.path else name


class Decl(NamedTuple):
    """What a node declares. `role`: function | method | type | module (emitted units),
    namespace (a container never emitted; `body` None: it covers the rest of its block) or group
    (children walked in place: `#ifdef`, `extern "C"`, ERROR)."""

    role: str
    name: str = ""
    body: Node | None = None  # whose named children hold the members
    qualified: str | None = None  # when not scope.join(name): Rust impl blocks, C++ `A::f`
    members: str | None = None  # qualified path members join, when not `qualified`
    sep: str | None = None  # separator for members, when not the language's (" > " in describe)
    test: bool = False  # known to be a test by its hook (JS `it(...)`, gtest `TEST(...)`)


Hook = Callable[["Node", Scope], "Decl | None"]
TestRule = Callable[[Decl, "Node", "list[Node]", Scope], bool]


def text(node: Node | None) -> str:
    return "" if node is None else (node.text or b"").decode("utf-8", "replace")


def field_name(node: Node) -> str:
    return text(node.child_by_field_name("name")) or "(anonymous)"


def _never(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
    return False


def _no_name(name: str) -> bool:
    return False


def _no_anchor(node: Node) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Grammar:
    """How to find units in one language's syntax tree. Mappings go from a node type to the field
    holding its body (None: a leaf, or for wrappers the last named child)."""

    grammar: str  # tree-sitter-language-pack name
    sep: str = "."
    functions: frozenset[str] = frozenset()
    types: Mapping[str, str | None] = field(default_factory=dict)
    modules: Mapping[str, str] = field(default_factory=dict)  # emitted containers (Rust `mod`)
    namespaces: Mapping[str, str | None] = field(default_factory=dict)  # never emitted
    groups: frozenset[str] = frozenset({"ERROR"})
    wrappers: Mapping[str, str | None] = field(default_factory=dict)  # range outer, meaning inner
    prefixes: frozenset[str] = frozenset({"comment"})  # attach to the next unit if adjacent
    test_prefixes: frozenset[str] = frozenset()  # prefixes whose text `is_test` reads
    hooks: Mapping[str, Hook] = field(default_factory=dict)  # node types the tables can't say
    name: Callable[[Node], str] = field_name
    is_test: TestRule = _never
    test_class: Callable[[str], bool] = _no_name  # a type with this name holding tests is one
    anchor: Callable[[Node], str | None] = _no_anchor  # module-doc node -> name ("": the path's)

    def classify(self, node: Node, scope: Scope) -> Decl | None:
        t = node.type
        if t in self.hooks:
            return self.hooks[t](node, scope)
        if t in self.functions:
            return Decl("function", self.name(node))
        if t in self.types:
            return Decl("type", self.name(node), _body(node, self.types[t]))
        if t in self.modules:
            body = _body(node, self.modules[t])
            return None if body is None else Decl("module", self.name(node), body)
        if t in self.namespaces:
            name = node.child_by_field_name("name")
            return Decl("namespace", text(name).strip("\"'"), _body(node, self.namespaces[t]))
        if t in self.groups:
            return Decl("group", body=node)
        return None

    def unwrap(self, node: Node) -> Node | None:
        """The declaration inside export/decorator/template wrappers (the node itself if none)."""
        while node is not None and node.type in self.wrappers:
            wanted = self.wrappers[node.type]
            inner = node.child_by_field_name(wanted) if wanted else None
            if inner is None and node.named_child_count:
                inner = node.named_children[-1]
            node = inner
        return node


def _body(node: Node, name: str | None) -> Node | None:
    """The child in field `name`, or (grammars without fields, like Kotlin's) of type `name`."""
    if not name:
        return None
    found = node.child_by_field_name(name)
    return found or next((c for c in node.named_children if c.type == name), None)


# -- Rust -------------------------------------------------------------------------------------

_RUST_ATTR_PATH = re.compile(rb"#\s*\[\s*([\w:]+)")
_RUST_CFG_TEST = re.compile(rb"cfg\s*\(\s*test\s*\)")


def _rust_type(node: Node | None) -> str:
    """`Parser` for `Parser<T>`, `&'a mut Parser`, `crate::Parser`."""
    while node is not None and node.type in (
        "generic_type",
        "reference_type",
        "pointer_type",
        "scoped_type_identifier",
    ):
        node = node.child_by_field_name("name" if node.type == "scoped_type_identifier" else "type")
    return text(node) or "?"


def _rust_impl(node: Node, scope: Scope) -> Decl:
    """`impl Foo` / `impl Display for Foo`: a type unit named Foo; its methods are `Foo::m`."""
    name = _rust_type(node.child_by_field_name("type"))
    self_path = scope.join(name)
    trait = node.child_by_field_name("trait")
    label = f"impl {_rust_type(trait)} for {self_path}" if trait else f"impl {self_path}"
    return Decl("type", name, node.child_by_field_name("body"), label, self_path)


def _rust_is_test(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
    attrs = [p.text for p in prefix if p.type == "attribute_item"]
    if decl.role == "module":
        return decl.name == "tests" or any(_RUST_CFG_TEST.search(a) for a in attrs)
    paths = [m.group(1) for a in attrs if (m := _RUST_ATTR_PATH.match(a))]
    return decl.role == "function" and any(p.endswith(b"test") for p in paths)


def _rust_anchor(node: Node) -> str | None:
    inner_doc = node.type in ("line_comment", "block_comment") and node.text[2:3] == b"!"
    return "" if inner_doc or node.type == "inner_attribute_item" else None


RUST = Grammar(
    "rust",
    sep="::",
    functions=frozenset({"function_item", "function_signature_item", "macro_definition"}),
    types={
        "struct_item": None,
        "enum_item": None,
        "union_item": None,
        "type_item": None,
        "trait_item": "body",
    },
    modules={"mod_item": "body"},
    groups=frozenset({"ERROR", "declaration_list"}),
    wrappers={"foreign_mod_item": "body"},
    prefixes=frozenset({"line_comment", "block_comment", "attribute_item"}),
    test_prefixes=frozenset({"attribute_item"}),
    hooks={"impl_item": _rust_impl},
    is_test=_rust_is_test,
    anchor=_rust_anchor,
)

# -- Python -----------------------------------------------------------------------------------

_PY_TEST_FUNCTION = re.compile(r"test(?:_|[A-Z0-9]|$)")


def _python_is_test(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
    """pytest's conventions (`test_*` at top level or in a `Test*` class), and unittest's."""
    if decl.role == "type":
        bases = text(node.child_by_field_name("superclasses"))
        return decl.name.startswith("Test") or "TestCase" in bases
    in_place = not scope.in_type or scope.in_test
    return decl.role == "function" and in_place and bool(_PY_TEST_FUNCTION.match(decl.name))


def _python_anchor(node: Node) -> str | None:
    if node.type == "expression_statement" and node.named_child_count == 1:
        node = node.named_children[0]
    return "" if node.type == "string" else None


PYTHON = Grammar(
    "python",
    functions=frozenset({"function_definition"}),
    types={"class_definition": "body"},
    wrappers={"decorated_definition": "definition"},
    is_test=_python_is_test,
    anchor=_python_anchor,
)

# -- Go ---------------------------------------------------------------------------------------

_GO_TEST = re.compile(r"(Test|Benchmark|Fuzz|Example)(?![a-z])")


def _go_method(node: Node, scope: Scope) -> Decl:
    """`func (p *Parser) Parse()`: a method qualified `Parser.Parse` (its type is elsewhere)."""
    name = field_name(node)
    params = node.child_by_field_name("receiver")
    receiver = params.named_children[0] if params and params.named_child_count else None
    ty = receiver.child_by_field_name("type") if receiver else None
    while ty is not None and ty.type in ("pointer_type", "generic_type", "parenthesized_type"):
        ty = ty.child_by_field_name("type") or (ty.named_children or [None])[0]
    return Decl("method", name, qualified=scope.join(f"{text(ty)}.{name}" if ty else name))


def _go_types(node: Node, scope: Scope) -> Decl:
    """`type X struct{...}` is one unit; a `type ( ... )` group, one per spec."""
    specs = [c for c in node.named_children if c.type in ("type_spec", "type_alias")]
    return Decl("type", field_name(specs[0])) if len(specs) == 1 else Decl("group", body=node)


def _go_is_test(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
    if decl.role not in ("function", "method"):
        return False
    return scope.file.endswith("_test.go") or bool(_GO_TEST.match(decl.name))


def _go_anchor(node: Node) -> str | None:
    return text(node.named_children[0]) if node.type == "package_clause" else None


GO = Grammar(
    "go",
    functions=frozenset({"function_declaration"}),
    types={"type_spec": None, "type_alias": None},
    hooks={"method_declaration": _go_method, "type_declaration": _go_types},
    is_test=_go_is_test,
    anchor=_go_anchor,
)

# -- JavaScript, TypeScript -------------------------------------------------------------------

_JS_SUITES = frozenset({"describe", "suite", "context", "fdescribe", "xdescribe", "xcontext"})
_JS_CASES = frozenset({"it", "test", "specify", "fit", "xit", "xtest", "bench"})
_JS_FUNCTION_VALUES = frozenset(
    {
        "arrow_function",
        "function_expression",
        "function",
        "generator_function",
    }
)


def _js_string(node: Node) -> str:
    if node.type in ("string", "template_string"):
        return text(node)[1:-1]
    return text(node)


def _js_test_call(node: Node, scope: Scope) -> Decl | None:
    """`describe("x", () => {...})`, `it.each(...)("y", fn)`: a test; a describe's callback
    holds more tests, qualified `x > y`."""
    callee = node.child_by_field_name("function")
    while callee is not None and callee.type in ("call_expression", "member_expression"):
        callee = callee.child_by_field_name(
            "function" if callee.type == "call_expression" else "object"
        )
    word = text(callee)
    args = node.child_by_field_name("arguments")
    if word not in _JS_SUITES | _JS_CASES or args is None or not args.named_child_count:
        return None
    values = args.named_children
    callback = next((a for a in reversed(values) if a.type in _JS_FUNCTION_VALUES), None)
    body = callback.child_by_field_name("body") if callback and word in _JS_SUITES else None
    if body is not None and body.type != "statement_block":
        body = None
    role = "module" if word in _JS_SUITES else "function"
    return Decl(role, _js_string(values[0]), body, sep=" > ", test=True)


def _js_variable(node: Node, scope: Scope) -> Decl | None:
    """`const f = () => ...` is a function, `const C = class {...}` a type."""
    for declarator in node.named_children:
        value = declarator.child_by_field_name("value")
        if value is None:
            continue
        if value.type in _JS_FUNCTION_VALUES:
            return Decl("function", field_name(declarator))
        if value.type == "class":
            return Decl("type", field_name(declarator), value.child_by_field_name("body"))
    return None


def _js_field(node: Node, scope: Scope) -> Decl | None:
    """A class field holding an arrow function (`handle = () => {...}`) is a method."""
    value = node.child_by_field_name("value")
    if value is None or value.type not in _JS_FUNCTION_VALUES:
        return None
    return Decl(
        "function", text(node.child_by_field_name("name") or node.child_by_field_name("property"))
    )


def _js_grammar(grammar: str) -> Grammar:
    return Grammar(
        grammar,
        functions=frozenset(
            {
                "function_declaration",
                "generator_function_declaration",
                "function_expression",
                "method_definition",
                "function_signature",
                "abstract_method_signature",
            }
        ),
        types={
            "class_declaration": "body",
            "class": "body",
            "abstract_class_declaration": "body",
            "interface_declaration": None,
            "type_alias_declaration": None,
            "enum_declaration": None,
        },
        namespaces={"internal_module": "body", "module": "body"},
        wrappers={
            "export_statement": "declaration",
            "ambient_declaration": None,
            "expression_statement": None,
        },
        prefixes=frozenset({"comment", "decorator"}),
        hooks={
            "call_expression": _js_test_call,
            "lexical_declaration": _js_variable,
            "variable_declaration": _js_variable,
            "field_definition": _js_field,
            "public_field_definition": _js_field,
        },
    )


JAVASCRIPT = _js_grammar("javascript")
TYPESCRIPT = _js_grammar("typescript")
TSX = _js_grammar("tsx")

# -- Java, C# ---------------------------------------------------------------------------------

_JAVA_TESTS = frozenset(
    {"Test", "ParameterizedTest", "RepeatedTest", "TestFactory", "TestTemplate"}
)
_CSHARP_TESTS = frozenset(
    {"Test", "TestMethod", "DataTestMethod", "Fact", "Theory", "TestCase", "TestCaseSource"}
)


def _annotated(names: frozenset[str], holder: str, kinds: tuple[str, ...]) -> TestRule:
    """A method is a test when an annotation/attribute under `holder` has one of `names`."""

    def is_test(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
        if decl.role != "function":
            return False
        for group in node.named_children:
            if group.type != holder:
                continue
            for ann in group.named_children:
                if ann.type in kinds and field_name(ann).rsplit(".", 1)[-1] in names:
                    return True
        return False

    return is_test


def _test_class_name(name: str) -> bool:
    return name.endswith(("Test", "Tests"))


def _java_anchor(node: Node) -> str | None:
    return text(node.named_children[0]) if node.type == "package_declaration" else None


_JAVA_TYPES = (
    "class_declaration",
    "interface_declaration",
    "enum_declaration",
    "record_declaration",
    "annotation_type_declaration",
)

JAVA = Grammar(
    "java",
    functions=frozenset(
        {"method_declaration", "constructor_declaration", "compact_constructor_declaration"}
    ),
    types=dict.fromkeys(_JAVA_TYPES, "body"),
    groups=frozenset({"ERROR", "enum_body_declarations"}),
    prefixes=frozenset({"line_comment", "block_comment"}),
    is_test=_annotated(_JAVA_TESTS, "modifiers", ("marker_annotation", "annotation")),
    test_class=_test_class_name,
    anchor=_java_anchor,
)

CSHARP = Grammar(
    "csharp",
    functions=frozenset(
        {
            "method_declaration",
            "constructor_declaration",
            "destructor_declaration",
            "operator_declaration",
        }
    ),
    types={
        "class_declaration": "body",
        "struct_declaration": "body",
        "record_declaration": "body",
        "interface_declaration": "body",
        "enum_declaration": None,
    },
    namespaces={"namespace_declaration": "body", "file_scoped_namespace_declaration": None},
    is_test=_annotated(_CSHARP_TESTS, "attribute_list", ("attribute",)),
    test_class=_test_class_name,
)

# -- C, C++ -----------------------------------------------------------------------------------

_C_SPECIFIERS = frozenset(
    {"struct_specifier", "union_specifier", "enum_specifier", "class_specifier"}
)
# Test macros that read as function definitions: gtest TEST(Suite, Name), Catch2 TEST_CASE("x").
_C_TEST_MACROS = frozenset(
    {
        "TEST",
        "TEST_F",
        "TEST_P",
        "TYPED_TEST",
        "TYPED_TEST_P",
        "TEST_CASE",
        "TEST_CASE_METHOD",
        "SCENARIO",
        "BOOST_AUTO_TEST_CASE",
    }
)


def _c_declarator(node: Node) -> Node:
    """The innermost declarator: the name of `int *(*f)(int)`, `Foo::bar`, `operator==`."""
    while True:
        inner = node.child_by_field_name("declarator")
        if inner is None and node.type == "parenthesized_declarator" and node.named_child_count:
            inner = node.named_children[0]
        if inner is None:
            return node
        node = inner


def _c_function(node: Node, scope: Scope) -> Decl:
    """A function definition; `Foo::bar` out of its class is qualified with its written scope;
    a test macro is a test named `Suite.Name` (or by its string)."""
    declarator = node.child_by_field_name("declarator")
    name_node = _c_declarator(node)
    written = text(name_node)
    if written in _C_TEST_MACROS and declarator is not None:
        params = declarator.child_by_field_name("parameters")
        args = [text(p).strip() for p in params.named_children] if params else []
        label = args[0][1:-1] if args and args[0].startswith('"') else ".".join(args[:2])
        return Decl("function", label or written, test=True)
    name = written.rsplit("::", 1)[-1]
    return Decl("function", name, qualified=scope.join(written) if "::" in written else None)


def _c_type(members: bool) -> Hook:
    """A struct/union/enum (C++ also class) with a body, alone, in a declaration or a typedef:
    named by its tag, or by its typedef/variable name when anonymous or typedef'd."""

    def hook(node: Node, scope: Scope) -> Decl | None:
        spec = node if node.type in _C_SPECIFIERS else node.child_by_field_name("type")
        typedef = node.type in ("type_definition", "alias_declaration")
        is_spec = spec is not None and spec.type in _C_SPECIFIERS
        body = spec.child_by_field_name("body") if is_spec else None
        if body is None and not typedef:
            return None
        if typedef:
            name = node.child_by_field_name("name") or _c_declarator(node)
        else:
            name = spec.child_by_field_name("name") or _c_declarator(node)
        walk = members and is_spec and spec.type != "enum_specifier"
        return Decl("type", text(name) or "(anonymous)", body if walk else None)

    return hook


_C_TYPE_NODES = (
    "type_definition",
    "declaration",
    "field_declaration",
    "alias_declaration",
    *_C_SPECIFIERS,
)


def _c_grammar(grammar: str, cpp: bool) -> Grammar:
    types = _c_type(members=cpp)
    hooks: dict[str, Hook] = {"function_definition": _c_function}
    hooks.update(dict.fromkeys(_C_TYPE_NODES, types))
    return Grammar(
        grammar,
        sep="::" if cpp else ".",
        namespaces={"namespace_definition": "body"},
        groups=frozenset(
            {
                "ERROR",
                "preproc_ifdef",
                "preproc_if",
                "preproc_else",
                "preproc_elif",
                "preproc_elifdef",
                "declaration_list",
            }
        ),
        wrappers={"template_declaration": None, "linkage_specification": "body"},
        hooks=hooks,
    )


# -- Kotlin (its grammar has no field names: bodies and names are found by node type) ----------

_KOTLIN_ANNOTATION = re.compile(r"@(?:\w+:)?([\w.]+)")


def _kotlin_name(node: Node) -> str:
    for child in node.named_children:
        if child.type in ("simple_identifier", "type_identifier"):
            return text(child)
    return "Companion" if node.type == "companion_object" else "(anonymous)"


def _kotlin_is_test(decl: Decl, node: Node, prefix: list[Node], scope: Scope) -> bool:
    if decl.role != "function":
        return False
    modifiers = next((c for c in node.named_children if c.type == "modifiers"), None)
    names = _KOTLIN_ANNOTATION.findall(text(modifiers))
    return any(n.rsplit(".", 1)[-1] in _JAVA_TESTS for n in names)


def _kotlin_anchor(node: Node) -> str | None:
    return text(node.named_children[0]) if node.type == "package_header" else None


KOTLIN = Grammar(
    "kotlin",
    functions=frozenset({"function_declaration", "secondary_constructor"}),
    types={
        "class_declaration": "class_body",
        "object_declaration": "class_body",
        "companion_object": "class_body",
    },
    prefixes=frozenset({"line_comment", "multiline_comment"}),
    name=_kotlin_name,
    is_test=_kotlin_is_test,
    test_class=_test_class_name,
    anchor=_kotlin_anchor,
)

C = _c_grammar("c", cpp=False)
CPP = _c_grammar("cpp", cpp=True)

# The unit tables by tree-sitter grammar; which repolm language a grammar parses is
# `repolm.syntax`'s one table.
TABLES: dict[str, Grammar] = {
    g.grammar: g
    for g in (RUST, PYTHON, GO, JAVASCRIPT, TYPESCRIPT, TSX, JAVA, C, CPP, CSHARP, KOTLIN)
}
# The repolm languages whose files are cut into declaration units.
LANGUAGES: dict[str, Grammar] = {
    language: TABLES[g] for language, g in syntax.GRAMMARS.items() if g in TABLES
}


def grammar_for(language: str | None, path: str) -> Grammar | None:
    """The unit tables for a file in a repolm language (`.tsx` files: TypeScript's JSX
    dialect); None for a language without them."""
    name = syntax.grammar_name(language, path)
    return TABLES.get(name) if name is not None else None
