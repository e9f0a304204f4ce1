"""Figma's MCP tools: what an AI client sees, and how each maps onto the Figma REST API."""

from __future__ import annotations

from typing import Any

from mcp.protocol.schemas import ANY_OBJECT, object_schema
from mcp.protocol.tools import Tool
from services.figma.api import FigmaClient

FILE_KEY = {"type": "string", "pattern": r"^[A-Za-z0-9]{1,64}$",
            "description": "The file key: the part after /file/ or /design/ in a Figma URL"}
NODE_IDS = {"type": "array", "minItems": 1, "maxItems": 200,
            "items": {"type": "string", "pattern": r"^[A-Za-z0-9:;_-]{1,200}$"},
            "description": "Node ids such as \"1:2\" (from a URL's node-id=1-2, replace '-' with ':')"}
DEPTH = {"type": "integer", "minimum": 1, "maximum": 10,
         "description": "How many levels of the document tree to return (1 = pages only)"}
PLAIN_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}


async def get_me(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.me()


async def get_file(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.file(args["file_key"], depth=args.get("depth", 2), ids=args.get("ids"),
                            version=args.get("version"))


async def get_file_nodes(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.file_nodes(args["file_key"], args["ids"], args.get("depth"))


async def render_images(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.images(args["file_key"], args["ids"], args.get("format", "png"), args.get("scale"))


async def get_image_fills(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.image_fills(args["file_key"])


async def get_file_versions(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.versions(args["file_key"])


async def list_comments(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.comments(args["file_key"], args.get("as_md", False))


async def post_comment(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.post_comment(args["file_key"], args["message"], args.get("client_meta"),
                                    args.get("comment_id"))


async def list_team_projects(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.team_projects(args["team_id"])


async def list_project_files(figma: FigmaClient, args: dict[str, Any]) -> Any:
    return await figma.project_files(args["project_id"])


TOOLS = [
    Tool("get_me", "The Figma user this instance's token belongs to (id, handle, email).",
         object_schema({}), get_me, ANY_OBJECT, title="Current Figma user"),
    Tool("get_file", "A Figma file's document tree, components and styles. Use depth to keep it small "
         "(default 2: pages and their top-level frames); pass ids to fetch only some nodes.",
         object_schema({"file_key": FILE_KEY, "depth": DEPTH, "ids": NODE_IDS,
                        "version": {"type": "string", "maxLength": 64,
                                    "description": "A version id from get_file_versions"}},
                       ["file_key"]),
         get_file, ANY_OBJECT, title="Get file"),
    Tool("get_file_nodes", "Specific nodes of a Figma file (and their subtrees), by node id.",
         object_schema({"file_key": FILE_KEY, "ids": NODE_IDS, "depth": DEPTH}, ["file_key", "ids"]),
         get_file_nodes, ANY_OBJECT, title="Get file nodes"),
    Tool("render_images", "Render nodes of a Figma file as images; returns a URL per node id (URLs expire "
         "after 30 days). For large frames lower the scale or render fewer ids.",
         object_schema({"file_key": FILE_KEY, "ids": NODE_IDS,
                        "format": {"type": "string", "enum": ["png", "jpg", "svg", "pdf"],
                                   "description": "Default png"},
                        "scale": {"type": "number", "minimum": 0.01, "maximum": 4, "description": "Default 1"}},
                       ["file_key", "ids"]),
         render_images, ANY_OBJECT, title="Render images"),
    Tool("get_image_fills", "Download URLs for every image used as a fill in a Figma file, by image ref.",
         object_schema({"file_key": FILE_KEY}, ["file_key"]), get_image_fills, ANY_OBJECT, title="Get image fills"),
    Tool("get_file_versions", "The version history of a Figma file (newest first).",
         object_schema({"file_key": FILE_KEY}, ["file_key"]), get_file_versions, ANY_OBJECT, title="Get file versions"),
    Tool("list_comments", "The comments on a Figma file.",
         object_schema({"file_key": FILE_KEY,
                        "as_md": {"type": "boolean", "description": "Return messages as Markdown"}},
                       ["file_key"]),
         list_comments, ANY_OBJECT, title="List comments"),
    Tool("post_comment", "Post a comment on a Figma file, optionally pinned to a position or node "
         "(client_meta) or as a reply (comment_id).",
         object_schema({"file_key": FILE_KEY, "message": {"type": "string", "minLength": 1, "maxLength": 10000},
                        "client_meta": {"type": "object", "description": "Figma Vector {x, y} or FrameOffset "
                                                                        "{node_id, node_offset}"},
                        "comment_id": {"type": "string", "pattern": r"^[0-9]{1,32}$",
                                       "description": "Reply to this comment"}},
                       ["file_key", "message"]),
         post_comment, ANY_OBJECT, title="Post comment", read_only=False),
    Tool("list_team_projects", "The projects of a Figma team the token can see (team id from the team URL).",
         object_schema({"team_id": PLAIN_ID}, ["team_id"]), list_team_projects, ANY_OBJECT, title="List team projects"),
    Tool("list_project_files", "The files in a Figma project.",
         object_schema({"project_id": PLAIN_ID}, ["project_id"]), list_project_files, ANY_OBJECT,
         title="List project files"),
]
