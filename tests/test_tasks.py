import pytest

from codesift.tasks import BUILTIN_TASKS, TaskRegistry, prefix_for, resolve_task

# The exact prefixes of PAPER.md (model cards).
EXPECTED = {
    "nl2code": ("Find the most relevant code snippet given the following query:\n", "Candidate code snippet:\n"),
    "qa": ("Find the most relevant answer given the following question:\n", "Candidate answer:\n"),
    "code2code": ("Find an equivalent code snippet given the following code snippet:\n", "Candidate code snippet:\n"),
    "code2nl": ("Find the most relevant comment given the following code snippet:\n", "Candidate comment:\n"),
    "code2completion": (
        "Find the most relevant completion given the following start of code snippet:\n",
        "Candidate completion:\n",
    ),
}


def test_builtin_prefixes_are_exact():
    assert set(BUILTIN_TASKS) == set(EXPECTED)
    for name, (q, d) in EXPECTED.items():
        assert prefix_for(name, "query") == q
        assert prefix_for(name, "document") == d
        assert prefix_for(name, "passage") == d


@pytest.mark.parametrize(
    "spelling,role",
    [("nl2code.query", "query"), ("nl2code.passage", "document"), ("nl2code_query", "query"),
     ("nl2code_document", "document"), ("nl2code.document", "document"), ("code2completion_passage", "document")],
)
def test_names_people_use(spelling, role):
    task, r = resolve_task(spelling)
    assert r == role
    assert task.name in EXPECTED


def test_bare_name_uses_given_role_and_defaults_to_query():
    assert resolve_task("qa")[1] == "query"
    assert resolve_task("qa", "passage")[1] == "document"


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        resolve_task("text2sql")
    for name in EXPECTED:
        assert name in str(err.value)


def test_unknown_role_and_conflicting_role():
    with pytest.raises(ValueError, match="role"):
        resolve_task("nl2code", "answer")
    with pytest.raises(ValueError, match="names role"):
        resolve_task("nl2code.query", "document")


def test_register_own_task():
    reg = TaskRegistry()
    reg.register("sql", "Find the SQL for this question:\n", "Candidate SQL:\n")
    assert reg.resolve("sql.passage")[0].prefix("document") == "Candidate SQL:\n"
    assert reg.prompts()["sql_query"] == "Find the SQL for this question:\n"
    assert len(reg.prompts()) == 12
    with pytest.raises(ValueError, match="exists already"):
        reg.register("sql", "a", "b")
    with pytest.raises(ValueError, match="letters"):
        reg.register("bad.name", "a", "b")
