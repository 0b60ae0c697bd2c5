package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd"
)

// RespondTool is the tool a structured answer is asked for as: its input
// schema is the output schema, and the request forces the model to call
// it, so the answer arrives as JSON in the schema's shape rather than as
// prose to be parsed.
const RespondTool = "respond"

// respondTool is the tool a structured answer is asked for as.
func respondTool(schema *Schema) agentd.Tool {
	return agentd.Tool{
		Name:        RespondTool,
		Description: "Submit your answer. Call this tool exactly once, with every required field; the answer is read only from it.",
		InputSchema: schema.Raw(),
	}
}

// structured is the outcome of asking for a structured answer.
type structured struct {
	output  any             // the valid answer, decoded
	raw     json.RawMessage // the same, as the model sent it
	usage   agentd.Usage    // of every call made, the repair included
	latency time.Duration   // of every call made
	model   string          // the model that answered, as it names itself
	steps   int
}

// structured asks for an answer matching schema: as a forced call of
// RespondTool, validated with a JSON Schema validator. An invalid answer
// is sent back once with every violation, as the tool's error result, for
// the model to correct; if the correction is invalid too, the result is
// KindInvalidModelOutput listing the violations, and no answer.
func (c *caller) structured(ctx context.Context, m *meter, meta callMeta, req agentd.ModelRequest, schema *Schema) (structured, error) {
	if !slices.ContainsFunc(req.Tools, func(t agentd.Tool) bool { return t.Name == RespondTool }) {
		req.Tools = append(slices.Clip(req.Tools), respondTool(schema))
	}
	req.ToolChoice = agentd.ToolChoice{Type: agentd.ToolChoiceTool, Name: RespondTool, DisableParallelToolUse: true}
	var out structured
	var violations []string
	for attempt := range 2 {
		kind := meta.kind
		if attempt > 0 {
			kind = callRepair
		}
		resp, err := c.call(ctx, m, callMeta{userID: meta.userID, kind: kind, source: meta.source}, req)
		out.steps++
		if err != nil {
			return out, err
		}
		out.usage = out.usage.Add(resp.Usage)
		out.latency += resp.Latency
		out.model = resp.Model
		var use agentd.Block
		var found bool
		for _, b := range resp.Content {
			if b.Type == agentd.BlockToolUse && b.ToolName == RespondTool {
				use, found = b, true
				break
			}
		}
		var feedback agentd.Block
		if found {
			v, vs := schema.ValidateJSON(use.ToolInput)
			if len(vs) == 0 {
				out.output, out.raw = v, use.ToolInput
				return out, nil
			}
			violations = vs
			feedback = agentd.Block{Type: agentd.BlockToolResult, ToolUseID: use.ToolUseID, IsError: true,
				Text: "Your answer does not match the required schema:\n- " + strings.Join(vs, "\n- ") +
					"\nCall " + RespondTool + " again with a corrected, complete answer."}
		} else {
			violations = []string{"(root): the model did not call " + RespondTool}
			feedback = agentd.TextBlock("You must answer by calling the " + RespondTool + " tool with a complete answer.")
		}
		// The repair turn: the model's own answer, then what was wrong
		// with it. A tool_use must be answered by its tool_result in the
		// very next user message, and nothing else may answer it.
		assistant := make([]agentd.Block, 0, len(resp.Content))
		for _, b := range resp.Content {
			if b.Type == agentd.BlockToolUse && b.ToolUseID != use.ToolUseID {
				continue // a stray second tool call would need a result of its own
			}
			if b.Type == agentd.BlockText && strings.TrimSpace(b.Text) == "" {
				continue
			}
			assistant = append(assistant, b)
		}
		if len(assistant) == 0 {
			assistant = []agentd.Block{agentd.TextBlock("(no answer)")}
		}
		req.Messages = append(append([]agentd.Message(nil), req.Messages...),
			agentd.Message{Role: agentd.RoleAssistant, Content: assistant},
			agentd.Message{Role: agentd.RoleUser, Content: []agentd.Block{feedback}})
	}
	return out, &agentd.Error{
		Kind:       agentd.KindInvalidModelOutput,
		Op:         "agent",
		Message:    "the model's answer does not match the output schema, even after a repair: " + strings.Join(violations, "; "),
		Violations: violations,
	}
}
