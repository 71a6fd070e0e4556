from edgelm.measure.icl_suite import suite_drops, suite_prompts, suite_tasks


def test_tasks_are_seeded_and_their_answers_are_right():
    tasks = suite_tasks(seed=3)
    assert tasks == suite_tasks(seed=3) and len(tasks) >= 6 and all(len(t) == 20 for t in tasks.values())
    assert all(str(eval(x)) == y for x, y in tasks["addition"])
    assert all(int(y) == int(x) + 1 for x, y in tasks["next_number"])
    assert all(y == x.upper() for x, y in tasks["uppercase"])


def test_prompts_show_k_other_pairs_of_the_task_then_the_query():
    task = suite_tasks()["capitals"]
    for (country, capital), prompt in zip(task, suite_prompts(task, k=3, seed=0)):
        blocks = prompt.split("\n\n")
        assert len(blocks) == 4 and blocks[-1] == f"Input: {country}\nOutput:"
        assert all(b.startswith("Input: ") and f"Output: {capital}" not in b for b in blocks[:-1])


def test_drops_are_reference_minus_candidate_per_task():
    cand = {"icl_suite": {"a": 50.0, "b": 100.0}, "icl_suite_accuracy": 75.0}
    ref = {"icl_suite": {"a": 80.0, "b": 90.0}, "icl_suite_accuracy": 85.0}
    drops = suite_drops(cand, ref)
    assert drops["icl_suite_drops"] == {"a": 30.0, "b": -10.0} and drops["icl_suite_drop_pt"] == 10.0
