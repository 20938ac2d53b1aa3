"""The compiled IR (pipeline.yaml) as the KFP backend walks it: every task of every DAG, and where
each of its inputs comes from.

The Argo compiler (backend/src/v2/compiler/argocompiler/dag.go, `DAG` and `task`) turns each task of
each DAG component into Argo DAG tasks, recursing into sub-DAGs (conditions, ParallelFor bodies);
the driver (backend/src/v2/driver/resolve.go, `resolveInputs`) resolves each input from the task's
own DAG: a `componentInputParameter`/`componentInputArtifact` from the parent DAG's inputs, a
`taskOutput*` from a sibling task, following a DAG task's `outputs` selectors down to the container
that produced it, and collecting over the iterations of a ParallelFor (`CollectInputs`). This module
does the same walk on the IR as data, with no cluster: nothing here knows this pipeline's task
names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml


@dataclasses.dataclass(frozen=True, eq=False)  # identity: one object per task of the IR
class Task:
    """One task of one DAG. `dag` is the path of DAG task keys from the root (() for root tasks);
    `loops` the keys of the enclosing ParallelFor tasks, outermost first."""

    key: str
    dag: tuple
    loops: tuple
    spec: dict
    component: dict
    kind: str  # "container", "importer" or "dag"
    executor_label: str | None

    @property
    def path(self) -> str:
        return "/".join(self.dag + (self.key,))

    @property
    def display_name(self) -> str:
        return self.spec.get("taskInfo", {}).get("name", "")

    @property
    def is_iterator(self) -> bool:
        return "parameterIterator" in self.spec or "artifactIterator" in self.spec

    @property
    def caching(self) -> bool:
        return bool(self.spec.get("cachingOptions", {}).get("enableCache", False))


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one input (or one element of a collected input) comes from.

    kind: "task" (an output of `task`, a container or importer), "root" (the run parameter `name`),
    "constant" (`value`). `collected_over` names the ParallelFor whose iterations give one element
    each (CollectInputs), in iteration order."""

    kind: str
    task: Task | None = None
    output: str = ""
    name: str = ""
    value: object = None
    collected_over: Task | None = None


class IR:
    """A loaded pipeline.yaml: its pipeline spec and, when present, its Kubernetes platform spec."""

    def __init__(self, pipeline_spec: dict, platform_spec: dict | None = None):
        self.spec = pipeline_spec
        self.platform = (
            (platform_spec or {})
            .get("platforms", {})
            .get("kubernetes", {})
            .get("deploymentSpec", {})
            .get("executors", {})
        )
        self.components = pipeline_spec["components"]
        self.executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
        self.tasks: list[Task] = []
        self._dag_of: dict[tuple, dict] = {(): pipeline_spec["root"]}
        self._task_at: dict[tuple, Task] = {}
        self._walk(pipeline_spec["root"], (), ())

    @classmethod
    def load(cls, path: str | Path) -> IR:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
        return cls(documents[0], documents[1] if len(documents) > 1 else None)

    def with_arguments(self, arguments: dict) -> IR:
        """The same IR with `arguments` as the run parameters' values (their defaults replaced), so
        that a rule sees one run as submitted rather than the defaults."""
        import copy

        spec = copy.deepcopy(self.spec)
        parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        for name, value in arguments.items():
            if name in parameters:
                parameters[name]["defaultValue"] = value
        ir = IR(spec)
        ir.platform = self.platform
        return ir

    # ---- the walk (argocompiler/dag.go DAG -> task, recursing into sub-DAG components)
    # -----------------

    def _walk(self, component: dict, dag: tuple, loops: tuple) -> None:
        for key in sorted(component.get("dag", {}).get("tasks", {})):  # dag.go sorts the keys too
            spec = component["dag"]["tasks"][key]
            child = self.components[spec["componentRef"]["name"]]
            label = child.get("executorLabel")
            if "dag" in child:
                kind = "dag"
            elif label and "importer" in self.executors.get(label, {}):
                kind = "importer"
            else:
                kind = "container"
            task = Task(key, dag, loops, spec, child, kind, label)
            self.tasks.append(task)
            self._task_at[dag + (key,)] = task
            if kind == "dag":
                inner = dag + (key,)
                self._dag_of[inner] = child
                self._walk(child, inner, loops + ((key,) if task.is_iterator else ()))

    def task(self, dag: tuple, key: str) -> Task:
        return self._task_at[dag + (key,)]

    def parent(self, task: Task) -> Task | None:
        return self._task_at[task.dag] if task.dag else None

    def executing(self) -> list[Task]:
        """Tasks that run a pod of their own: containers and importers."""
        return [t for t in self.tasks if t.kind != "dag"]

    def root_parameters(self) -> dict:
        return self.spec["root"].get("inputDefinitions", {}).get("parameters", {})

    def input_type(self, task: Task, name: str) -> str | None:
        """The declared type of the task's input parameter `name` (component inputDefinitions)."""
        spec = task.component.get("inputDefinitions", {}).get("parameters", {}).get(name)
        return spec.get("parameterType") if spec else None

    # ---- resolution (driver/resolve.go)
    # ------------------------------------------------------------

    def artifact_sources(self, task: Task, name: str) -> list[Source]:
        """The producers of the task's input artifact `name`: one Source per task output."""
        return self._artifact_spec_sources(task.dag, task.spec["inputs"]["artifacts"][name])

    def _artifact_spec_sources(self, dag: tuple, spec: dict) -> list[Source]:
        if (
            "componentInputArtifact" in spec
        ):  # resolveInputArtifact: the parent DAG's input artifact
            if not dag:
                return [Source("root", name=spec["componentInputArtifact"])]
            owner = self._task_at[dag]
            return self._artifact_spec_sources(
                owner.dag, owner.spec["inputs"]["artifacts"][spec["componentInputArtifact"]]
            )
        output = spec["taskOutputArtifact"]  # resolveUpstreamArtifacts
        producer = self._task_at[dag + (output["producerTask"],)]
        return self._producer_sources(producer, output["outputArtifactKey"])

    def _producer_sources(self, producer: Task, key: str) -> list[Source]:
        if producer.kind != "dag":
            return [Source("task", task=producer, output=key)]
        # A DAG task: follow its outputs' artifact selectors (GetProducerTask); over a ParallelFor,
        # collect.
        selectors = producer.component["dag"]["outputs"]["artifacts"][key]["artifactSelectors"]
        inner = producer.dag + (producer.key,)
        sources = []
        for selector in selectors:
            sub = self._task_at[inner + (selector["producerSubtask"],)]
            for source in self._producer_sources(sub, selector["outputArtifactKey"]):
                if producer.is_iterator and source.collected_over is None:
                    source = dataclasses.replace(source, collected_over=producer)
                sources.append(source)
        return sources

    def parameter_source(self, task: Task, name: str) -> Source:
        """Where the task's input parameter `name` comes from: a run parameter, a task output, a
        constant, or a ParallelFor's item (then the Source of the list it iterates over,
        collected_over the loop)."""
        return self._parameter_spec_source(task.dag, task.spec["inputs"]["parameters"][name])

    def _parameter_spec_source(self, dag: tuple, spec: dict) -> Source:
        if "runtimeValue" in spec:
            return Source("constant", value=spec["runtimeValue"].get("constant"))
        if "taskOutputParameter" in spec:
            output = spec["taskOutputParameter"]
            producer = self._task_at[dag + (output["producerTask"],)]
            if producer.kind == "dag":
                selector = producer.component["dag"]["outputs"]["parameters"][
                    output["outputParameterKey"]
                ]
                chosen = (
                    selector.get("valueFromParameter")
                    or selector["valueFromOneof"]["parameterSelectors"][0]
                )
                inner = producer.dag + (producer.key,)
                return self._parameter_spec_source(
                    inner,
                    {
                        "taskOutputParameter": {
                            "producerTask": chosen["producerSubtask"],
                            "outputParameterKey": chosen["outputParameterKey"],
                        }
                    },
                )
            return Source("task", task=producer, output=output["outputParameterKey"])
        if "componentInputParameter" in spec:
            name = spec["componentInputParameter"]
            if not dag:
                return Source("root", name=name)
            owner = self._task_at[dag]
            iterator = owner.spec.get("parameterIterator")
            if (
                iterator and iterator.get("itemInput") == name
            ):  # the loop item: one element of the items
                items = iterator["items"]
                if "raw" in items:
                    return Source("constant", value=items["raw"], collected_over=owner)
                source = self._parameter_spec_source(
                    owner.dag, owner.spec["inputs"]["parameters"][items["inputParameter"]]
                )
                return dataclasses.replace(source, collected_over=owner)
            return self._parameter_spec_source(owner.dag, owner.spec["inputs"]["parameters"][name])
        if "taskFinalStatus" in spec:
            return Source("constant", value="<task final status>")
        raise ValueError(f"unknown parameter source {spec}")

    def upstream_tasks(self, task: Task) -> set:
        """Every container/importer task whose outputs reach this task's inputs, transitively."""
        seen, stack = set(), [task]
        while stack:
            current = stack.pop()
            for source in self.direct_sources(current):
                if source.kind == "task" and source.task not in seen:
                    seen.add(source.task)
                    stack.append(source.task)
        return seen

    def direct_sources(self, task: Task) -> list[Source]:
        inputs = task.spec.get("inputs", {})
        sources = [
            s for name in inputs.get("artifacts", {}) for s in self.artifact_sources(task, name)
        ]
        return sources + [
            self.parameter_source(task, name) for name in inputs.get("parameters", {})
        ]
