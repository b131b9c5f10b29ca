"""Where agents meet the exchange while they work: an MCP server (``mcp_server``, extra ``mcp``) and a
LiteLLM gateway hook (``litellm``, extra ``litellm``).  Both sit on ``token_exchange.api``; neither
module is imported by anything else, so the extras stay optional."""
