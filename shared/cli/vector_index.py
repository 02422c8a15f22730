"""`deepmem vector-index`: the scale-out store's HNSW index, and rebuilding it with new options."""

from __future__ import annotations

import time

import click

from . import App, cli, echo_json, json_option, pass_app


@cli.command("vector-index")
@click.option("--rebuild", is_flag=True,
              help="Build the index again with DEEPMEM_PG_HNSW_M and DEEPMEM_PG_HNSW_EF_CONSTRUCTION, beside the "
                   "old one (searches use it until the new one is swapped in).")
@json_option
@pass_app
def vector_index(app: App, rebuild: bool, as_json: bool) -> None:
    """The HNSW index of the Postgres store: built or not, its options, its size.

    Below 10,000 chunks searched, search is exact and needs no index;
    the ingest that crosses it builds one. Changed DEEPMEM_PG_HNSW_M or DEEPMEM_PG_HNSW_EF_CONSTRUCTION
    apply to the next build: run this with --rebuild.

    Example:

        DEEPMEM_PG_HNSW_M=32 DEEPMEM_PG_HNSW_EF_CONSTRUCTION=128 deepmem vector-index --rebuild
    """
    store = app.store(create=False)
    if not hasattr(store, "vector_index"):
        raise click.ClickException("the single-machine store (sqlite-vec) searches exactly and has no vector index; "
                                   "the HNSW index is for DEEPMEM_DATABASE_URL")
    took = None
    if rebuild:
        if store.dim is None:
            raise click.ClickException("the store has no vectors yet: ingest first")
        started = time.perf_counter()
        if not store.build_vector_index(rebuild=True):
            raise click.ClickException("another process is building the index now: try again when it is done")
        took = round(time.perf_counter() - started, 1)
    state = store.vector_index() | ({"rebuilt_in_s": took} if took is not None else {})
    if as_json:
        echo_json(state)
        return
    wanted = state["wanted"]
    if not state["built"]:
        click.echo(f"no HNSW index: {state['chunks']:,} chunks, searched exactly below {state['exact_below']:,}")
    else:
        click.echo(f"HNSW index{'' if state['valid'] else ' (INVALID: an interrupted build; --rebuild)'}: "
                   f"m {state['m']}, ef_construction {state['ef_construction']}, {state['size_mb']:,} MB, "
                   f"{state['chunks']:,} chunks; searched with ef_search {state['ef_search']}")
        if (state["m"], state["ef_construction"]) != (wanted["m"], wanted["ef_construction"]):
            click.echo(f"the settings ask for m {wanted['m']}, ef_construction {wanted['ef_construction']}: "
                       f"run `deepmem vector-index --rebuild` to apply them")
    if took is not None:
        click.echo(f"rebuilt in {took} s")
