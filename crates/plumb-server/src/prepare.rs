//! A chat request made ready for the engine: its tool plan, the prompt its chat template
//! renders (with the tools it offers), and the constraint its output follows — a forced tool
//! call, else its `response_format`. Every schema is compiled before the request is queued,
//! so a bad one is a 400 naming the field.

use plumb_engine::constrain::{Grammar, GrammarSpec};

use crate::error::ApiError;
use crate::handlers::EncodeTask;
use crate::structured::param_of;
use crate::tools::prompt::{self, Turn};
use crate::tools::{Family, ToolPlan};
use crate::wire::ChatRequest;
use crate::AppState;

pub struct Prepared {
    pub prompt: Vec<u32>,
    pub constraint: Option<Grammar>,
    /// Read the output for tool calls in this syntax.
    pub tools: Option<Family>,
}

/// A spec to compile and the `param` its errors are reported under.
type Target = (GrammarSpec, String);

impl AppState {
    pub(crate) async fn prepare_chat(&self, req: &ChatRequest) -> Result<Prepared, ApiError> {
        let plan = req.tool_plan()?;
        let format = self.inner.tool_format;
        let turns = req
            .texts()?
            .into_iter()
            .zip(&req.messages)
            .map(|((_, text), m)| Turn {
                role: &m.role,
                text,
                tool_calls: m.tool_calls.as_deref().unwrap_or_default(),
                tool_call_id: m.tool_call_id.as_deref(),
                name: m.name.as_deref(),
            })
            .collect();
        let rendered = prompt::build(turns, &plan.offered, format.native);
        // Every offered schema is checked, forced or not.
        let checks: Vec<Target> = plan
            .offered
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let p = f.parameters.clone()?;
                Some((
                    GrammarSpec::JsonSchema(p),
                    format!("tools[{i}].function.parameters"),
                ))
            })
            .collect();
        let target = self.target(req, &plan, format.family)?;
        let constraint = self.compile(checks, target).await?;
        let continue_final = req.continues_final()?;
        let prompt = self
            .encode(EncodeTask::Chat {
                prompt: rendered,
                continue_final,
            })
            .await?;
        Ok(Prepared {
            prompt,
            constraint,
            tools: plan.reads_calls().then_some(format.family),
        })
    }

    /// What the output must match: the forced call's syntax, else `response_format`.
    fn target(
        &self,
        req: &ChatRequest,
        plan: &ToolPlan,
        family: Family,
    ) -> Result<Option<Target>, ApiError> {
        if let Some(forced) = &plan.forced {
            let lark = family.forced_grammar(forced, plan.parallel, &self.inner.tokenizer);
            return Ok(Some((GrammarSpec::Lark(lark), "tools".into())));
        }
        let Some(format) = &req.response_format else {
            return Ok(None);
        };
        Ok(format.spec()?.map(|s| (s, param_of(format).to_string())))
    }

    /// Compiles the `checks` (errors only) and the `target`, off the async workers. Without a
    /// target and without a constrainer for this model the checks are skipped.
    async fn compile(
        &self,
        checks: Vec<Target>,
        target: Option<Target>,
    ) -> Result<Option<Grammar>, ApiError> {
        if checks.is_empty() && target.is_none() {
            return Ok(None);
        }
        let constrainer = match (&self.inner.constrainer, &target) {
            (Ok(c), _) => c.clone(),
            (Err(e), Some((_, param))) => {
                return Err(ApiError::invalid_param(param, e.to_string()))
            }
            (Err(_), None) => return Ok(None),
        };
        tokio::task::spawn_blocking(move || {
            let compile = |(spec, param): Target| {
                constrainer
                    .compile(spec)
                    .map_err(|e| ApiError::invalid_param(&param, e.to_string()))
            };
            for check in checks {
                compile(check)?;
            }
            target.map(compile).transpose()
        })
        .await
        .map_err(|e| ApiError::internal(format!("grammar task failed: {e}")))?
    }
}
